// Built instead of kernels/cuda/ when nvcc was not found: the cuda backend does not exist.
#include "kernels/ops.h"

const Ops *ops_cuda(void) {
    return NULL;
}

int ops_cuda_device_count(void) {
    return 0;
}

int ops_cuda_device_bus_id(int device, char *out, int len) {
    (void)device;
    if (len > 0)
        out[0] = '\0';
    return -1;
}
