// The tensor-core and asynchronous-copy instructions of the bf16 attention kernels
// (cuda_attention_tc.cu): thin wrappers around the PTX, so a kernel reads as the products it forms.
// Fragment layouts of the m16n8k16 product (PTX ISA, "mma.m16n8k16"), with g = lane / 4 and
// t = lane % 4:
//   A [16, 16] row-major: a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1],
//                         a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]
//   B [16, 8]:            b0 = B[2t, 2t+1][g],   b1 = B[2t+8, 2t+9][g]
//   C [16, 8] fp32:       c0, c1 = C[g][2t, 2t+1],  c2, c3 = C[g+8][2t, 2t+1]
// Two bf16 in one 32-bit register: the lower column (or row) in the low half.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

// cp.async: a 16-byte copy from global to shared memory that does not wait for the data
// (src-size 0 writes 16 zero bytes and reads nothing). Copies are grouped by commit and
// waited for by group, so a tile can be on its way while the previous one is worked on.
__device__ __forceinline__ void cp_async_16(void *shared_dst, const void *global_src, bool valid) {
    const uint32_t at = (uint32_t)__cvta_generic_to_shared(shared_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(at), "l"(global_src),
                 "r"(valid ? 16 : 0));
}
// The 4-byte form, for one float or int of a row's statistics (.cg takes 16 bytes only).
__device__ __forceinline__ void cp_async_4(void *shared_dst, const void *global_src) {
    const uint32_t at = (uint32_t)__cvta_generic_to_shared(shared_dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(at), "l"(global_src));
}
__device__ __forceinline__ void cp_async_commit(void) {
    asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most `pending` of this thread's latest groups are still on their way.
template <int pending> __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
}

// c += a . b, one m16n8k16 product (bf16 inputs, fp32 accumulation).
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 x 8 bf16 matrices from shared memory, transposed: lanes 8 i .. 8 i + 7 give the
// addresses of the 8 rows (16 bytes each) of matrix i; r[i] gets its elements (2 c, g) and
// (2 c + 1, g): the B fragment of rows [keys] read as columns.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __nv_bfloat16 *row) {
    const uint32_t at = (uint32_t)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(at));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x, the low half, = lo
    return *reinterpret_cast<uint32_t *>(&v);
}
