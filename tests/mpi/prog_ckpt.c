// Helper for test_ckpt.sh and the h5py tool test: saves checkpoints of the tiny model with
// pseudo-random parameters and moments, loads them back at any rank count and compares
// exactly, and writes a metrics.h5 slowly for an SWMR reader.
//
//   prog_ckpt save DIR STEP SEED KEEP      (any -np) write DIR/ckpt_STEP.h5
//   prog_ckpt load PATH STEP SEED [NAME=VALUE]
//                                          (any -np) load, compare with what save wrote;
//                                          NAME=VALUE changes the running config first.
//                                          Exit 3 with the loader's message on refusal.
//   prog_ckpt latest DIR                   print checkpoint_find_latest's step and path
//   prog_ckpt metrics DIR ROWS DELAY_MS RESUME_STEP
//                                          (one process, no MPI) append ROWS rows, one
//                                          every DELAY_MS, after RESUME_STEP (-1: new file)
//
// The values are a function of the GLOBAL element (philox_normal keyed by tensor id and
// global index), so a loader at another rank count knows what each of its rows must hold.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/comm.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "kernels/error.h"
#include "kernels/philox.h"
#include "model/params.h"

enum { BUF_PARAMS = 0, BUF_M = 1, BUF_V = 2 };

// Fill buf [n_local] with the values `which` buffer of a checkpoint from `seed` holds.
static void fill_expected(const ParamLayout *layout, uint64_t seed, int which, float *buf) {
    for (int i = 0; i < layout->n_tensors; i++) {
        const ParamTensor *t = &layout->tensors[i];
        uint64_t cols = t->ndim == 2 ? (uint64_t)t->shape[1] : 1;
        uint64_t first = (uint64_t)t->row_begin * cols; // global index of the first element
        for (size_t e = 0; e < t->numel; e++) {
            float x = philox_normal(seed * 3 + (uint64_t)which, t->id, first + e);
            buf[t->offset + e] = which == BUF_V ? x * x : x; // v is a second moment
        }
    }
}

static CheckpointState expected_state(int64_t step, uint64_t seed) {
    CheckpointState s;
    s.step = step;
    s.data_cursor = step * 16;
    s.seed = seed;
    s.rng = seed ^ 0xABCDEF12345ull;
    return s;
}

static int save(const CommInfo *info, const char *dir, int64_t step, uint64_t seed, int keep) {
    ModelConfig cfg = model_config_tiny();
    ParamLayout layout;
    param_layout_build(&layout, &cfg, info->rank, info->world);
    float *bufs[3];
    for (int b = 0; b < 3; b++) {
        bufs[b] = hs_malloc(sizeof(float) * layout.n_local);
        fill_expected(&layout, seed, b, bufs[b]);
    }
    CheckpointSetting settings[] = {{"lr", "0.001"}, {"batch_size", "16"}, {"data", "tasks"}};
    CheckpointData data = {
        .cfg = &cfg,
        .layout = &layout,
        .params = bufs[BUF_PARAMS],
        .m = bufs[BUF_M],
        .v = bufs[BUF_V],
        .master = NULL,
        .optim_step = step,
        .state = expected_state(step, seed),
        .settings = settings,
        .n_settings = 3,
    };
    char path[1300];
    checkpoint_save(MPI_COMM_WORLD, dir, &data, keep, path, sizeof(path));
    if (info->rank == 0)
        printf("saved %s at -np %d\n", path, info->world);
    for (int b = 0; b < 3; b++)
        free(bufs[b]);
    param_layout_free(&layout);
    return 0;
}

static int load(const CommInfo *info, const char *path, int64_t step, uint64_t seed,
                const char *override) {
    ModelConfig cfg = model_config_tiny();
    if (override) {
        char name[64], err[256];
        const char *eq = strchr(override, '=');
        if (!eq || eq - override >= (long)sizeof(name))
            hs_fatal("prog_ckpt: expected NAME=VALUE, got %s", override);
        memcpy(name, override, (size_t)(eq - override));
        name[eq - override] = '\0';
        if (model_config_set(&cfg, name, eq + 1, err, sizeof(err)) != 0)
            hs_fatal("prog_ckpt: %s", err);
    }
    ParamLayout layout;
    param_layout_build(&layout, &cfg, info->rank, info->world);
    float *got[3], *want[3];
    for (int b = 0; b < 3; b++) {
        got[b] = hs_calloc(layout.n_local, sizeof(float));
        want[b] = hs_malloc(sizeof(float) * layout.n_local);
        fill_expected(&layout, seed, b, want[b]);
    }
    CheckpointState state;
    int64_t optim_step = -1;
    char err[2048];
    if (checkpoint_load(MPI_COMM_WORLD, path, &cfg, &layout, got[0], got[1], got[2], NULL, &state,
                        &optim_step, err, sizeof(err)) != 0) {
        if (info->rank == 0)
            fprintf(stderr, "load refused: %s\n", err);
        return 3;
    }
    int bad = 0;
    const char *names[3] = {"params", "m", "v"};
    for (int b = 0; b < 3; b++)
        if (memcmp(got[b], want[b], sizeof(float) * layout.n_local) != 0) {
            size_t i = 0;
            while (got[b][i] == want[b][i])
                i++;
            fprintf(stderr, "[rank %d] %s differ at local element %zu: %g vs %g\n", info->rank,
                    names[b], i, got[b][i], want[b][i]);
            bad = 1;
        }
    CheckpointState ws = expected_state(step, seed);
    if (state.step != ws.step || state.data_cursor != ws.data_cursor || state.seed != ws.seed ||
        state.rng != ws.rng || optim_step != step) {
        fprintf(stderr, "[rank %d] state differs: step %lld cursor %lld seed %llu optim %lld\n",
                info->rank, (long long)state.step, (long long)state.data_cursor,
                (unsigned long long)state.seed, (long long)optim_step);
        bad = 1;
    }
    int any_bad = bad;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (info->rank == 0 && !any_bad)
        printf("loaded %s at -np %d: params, moments and state match exactly\n", path, info->world);
    for (int b = 0; b < 3; b++) {
        free(got[b]);
        free(want[b]);
    }
    param_layout_free(&layout);
    return any_bad ? 1 : 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Rows for steps resume+1 .. resume+rows: loss = 1 / step, per-layer values step + l / 10.
static int write_metrics(const char *dir, int rows, int delay_ms, int64_t resume_step) {
    const char *extra[] = {"eval_acc_mqar"};
    const int L = 3;
    Metrics *m = metrics_open(dir, extra, 1, NULL, 0, L, resume_step, 1);
    int64_t first = resume_step < 0 ? 1 : resume_step + 1;
    for (int64_t step = first; step < first + rows; step++) {
        metrics_begin(m, step);
        metrics_set(m, "loss", 1.0 / (double)step);
        metrics_set(m, "lr", 0.001);
        if (step % 5 == 0)
            metrics_set(m, "eval_acc_mqar", 0.5);
        float layers[3];
        for (int l = 0; l < L; l++)
            layers[l] = (float)step + (float)l / 10.0f;
        metrics_set_layers(m, "routed_fraction", layers);
        metrics_commit(m);
        if (delay_ms > 0)
            sleep_ms(delay_ms);
    }
    printf("metrics: %lld rows\n", (long long)metrics_rows(m));
    metrics_close(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && strcmp(argv[1], "metrics") == 0)
        return write_metrics(argv[2], atoi(argv[3]), atoi(argv[4]), atoll(argv[5]));
    if (argc >= 3 && strcmp(argv[1], "latest") == 0) {
        char path[1300] = "";
        long long step = (long long)checkpoint_find_latest(argv[2], path, sizeof(path));
        printf("%lld %s\n", step, path);
        return 0;
    }
    CommInfo info;
    dist_init(&argc, &argv, &info);
    hs_set_log_rank(info.rank);
    int rc;
    if (argc >= 6 && strcmp(argv[1], "save") == 0)
        rc = save(&info, argv[2], atoll(argv[3]), strtoull(argv[4], NULL, 10), atoi(argv[5]));
    else if (argc >= 5 && strcmp(argv[1], "load") == 0)
        rc = load(&info, argv[2], atoll(argv[3]), strtoull(argv[4], NULL, 10),
                  argc >= 6 ? argv[5] : NULL);
    else
        hs_fatal("usage: prog_ckpt save DIR STEP SEED KEEP | load PATH STEP SEED [NAME=VALUE] | "
                 "latest DIR | metrics DIR ROWS DELAY_MS RESUME_STEP");
    dist_finalize();
    return rc;
}
