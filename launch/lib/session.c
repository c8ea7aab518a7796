// Set-up shared by train, eval and sample: backend, communicator, threads, run directory,
// starting checkpoint, model configuration, model and data.
#include "launch/lib/session.h"

#include <errno.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "dist/mpi_check.h"
#include "io/checkpoint.h"
#include "kernels/error.h"

double session_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

_Noreturn void session_usage_error(const Session *s, const char *fmt, ...) {
    if (s->info.rank == 0) {
        va_list args;
        va_start(args, fmt);
        fprintf(stderr, "hspmn_dist: error: ");
        vfprintf(stderr, fmt, args);
        fprintf(stderr, "\n");
        va_end(args);
        fflush(stderr);
    }
    dist_finalize();
    exit(OPTIONS_EXIT_USAGE);
}

// ---- backend, communicator, threads ----------------------------------------------------

static const Ops *choose_backend(Session *s) {
    const char *asked = s->opt.device;
    const Ops *cuda = ops_cuda();
    if (asked[0] == '\0')
        return cuda ? cuda : ops_cpu();
    if (strcmp(asked, "cpu") == 0)
        return ops_cpu();
    if (!cuda) {
#ifdef HSPMN_HAVE_CUDA
        session_usage_error(s, "--device cuda: no CUDA GPU is visible to this process");
#else
        session_usage_error(s, "--device cuda: this build has no CUDA backend (nvcc was not "
                               "found when it was configured); use --device cpu");
#endif
    }
    return cuda;
}

static int choose_threads(const Session *s) {
    if (s->opt.threads > 0)
        return s->opt.threads;
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0)
        return atoi(env);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per_rank =
        (int)(cores > 0 ? cores : 1) / (s->info.local_world > 0 ? s->info.local_world : 1);
    return per_rank > 0 ? per_rank : 1;
}

// One limit: 0 = none.
static void check_limit(const Session *s, const char *entry, int value, int limit) {
    if (limit > 0 && value > limit)
        session_usage_error(s, "%s=%d is more than the %s backend's kernels take (at most %d)",
                            entry, value, s->ops->name, limit);
}

void session_check_backend_limits(const Session *s, const ModelConfig *c) {
    if (c->attn == ATTN_SPARSE)
        check_limit(s, "seq_len", c->seq_len, s->ops->max_seq_len);
    check_limit(s, "head_dim (d_model / n_heads)", model_head_dim(c), s->ops->max_head_dim);
    if (c->ffn == FFN_MEMORY) {
        check_limit(s, "top_k", c->top_k, s->ops->max_top_k);
        check_limit(s, "ptr_dim", c->ptr_dim, s->ops->max_ptr_dim);
    }
}

// --matmul's word as the op table's setting (options.c accepts only these three).
static MatmulPrecision matmul_precision_of(const char *name) {
    if (strcmp(name, "tf32") == 0)
        return MATMUL_TF32;
    if (strcmp(name, "bf16") == 0)
        return MATMUL_BF16;
    return MATMUL_FP32;
}

void session_open_backend(Session *s) {
    s->ops = choose_backend(s);
    // --matmul unset: the GPU's fast mixed precision; the cpu backend is fp32 whatever it says.
    if (s->opt.matmul[0] == '\0')
        snprintf(s->opt.matmul, sizeof(s->opt.matmul), "%s",
                 s->ops->kind == BACKEND_CUDA ? "bf16" : "fp32");
    // --activations unset: bf16 storage goes with bf16 products (the GEMMs round their inputs
    // to bf16 anyway); fp32 matmuls, chosen to compare with the oracle, keep fp32.
    if (s->opt.activations[0] == '\0')
        snprintf(s->opt.activations, sizeof(s->opt.activations), "%s",
                 s->ops->kind == BACKEND_CUDA && strcmp(s->opt.matmul, "bf16") == 0 ? "bf16"
                                                                                    : "fp32");
    // Each rank takes GPU local_rank % visible devices. NCCL refuses two ranks on one GPU,
    // so nccl is the default only when no two ranks of a node got the same physical GPU
    // (compared by PCI bus id: with one visible GPU per rank, as Slurm's --gpus-per-task=1
    // gives, every rank sees "device 0" yet each has its own); otherwise ranks share
    // GPUs through MPI.
    int n_devices = s->ops->kind == BACKEND_CUDA ? ops_cuda_device_count() : 0;
    int device = n_devices > 0 ? s->info.local_rank % n_devices : 0;
    char bus_id[64] = "cpu";
    if (s->ops->kind == BACKEND_CUDA)
        ops_cuda_device_bus_id(device, bus_id, sizeof(bus_id));
    int shared = dist_node_key_shared(bus_id); // collective: called by every rank
    int gpu_per_rank = s->ops->kind == BACKEND_CUDA && !shared;
    if (s->opt.comm[0] == '\0')
        s->comm_kind = s->ops->kind == BACKEND_CUDA && gpu_per_rank ? COMM_NCCL : COMM_MPI;
    else
        s->comm_kind = strcmp(s->opt.comm, "nccl") == 0 ? COMM_NCCL : COMM_MPI;
    if (s->comm_kind == COMM_NCCL && s->ops->kind != BACKEND_CUDA)
        session_usage_error(s, "--comm nccl needs --device cuda (the cpu backend uses --comm mpi)");
    if (s->comm_kind == COMM_NCCL && !gpu_per_rank)
        session_usage_error(s,
                            "--comm nccl needs one GPU per rank, but ranks of this node share "
                            "GPU %s (%d ranks here, %d GPU(s) visible): use --comm mpi",
                            bus_id, s->info.local_world, n_devices);

    s->threads = choose_threads(s);
#ifdef _OPENMP
    omp_set_num_threads(s->threads);
#else
    s->threads = 1;
#endif
    s->ops->init(device);
    s->ops->set_matmul_precision(matmul_precision_of(s->opt.matmul));
    s->comm = comm_create(s->comm_kind, s->ops);
}

// ---- run directory and the checkpoint to start from -------------------------------------

static void broadcast_string(char *text, int cap) {
    mpi_check(MPI_Bcast(text, cap, MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast(string)");
}

static void default_run_dir(char *out, size_t cap) {
    time_t now = time(NULL);
    struct tm parts;
    localtime_r(&now, &parts);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &parts);
    snprintf(out, cap, "runs/%s", stamp);
}

// mkdir -p; fatal error naming the path when a component cannot be made.
static void make_dirs(const char *path) {
    char partial[OPTIONS_PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof(partial))
        hs_fatal("run directory path too long: %s", path);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        memcpy(partial, path, i);
        partial[i] = '\0';
        if (mkdir(partial, 0775) != 0 && errno != EEXIST)
            hs_fatal("cannot create directory %s: %s", partial, strerror(errno));
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        hs_fatal("run directory %s exists but is not a directory", path);
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// A resumed run, eval or sample without --data reads the data its checkpoint was trained on
// (saved in /config), not the default: the cursor and the held-out split belong to it.
static void take_checkpoint_data(Session *s) {
    if (!s->ckpt_path[0] || s->opt.data_given)
        return;
    char data[OPTIONS_PATH_MAX] = "";
    if (s->info.rank == 0 &&
        checkpoint_read_setting(s->ckpt_path, "data", data, sizeof(data)) == 0 &&
        strcmp(data, s->opt.data) != 0)
        printf("data: %s, as the checkpoint was trained on (--data overrides)\n", data);
    broadcast_string(data, sizeof(data));
    if (data[0])
        snprintf(s->opt.data, sizeof(s->opt.data), "%s", data);
}

void session_resolve_run(Session *s, int require_ckpt) {
    const Options *opt = &s->opt;
    // Rank 0 decides and broadcasts, so a timestamp or a directory listing taken a moment
    // apart on two ranks can never disagree.
    char status_msg[2 * OPTIONS_PATH_MAX + 256] = "";
    if (s->info.rank == 0) {
        if (opt->run_dir[0])
            snprintf(s->run_dir, sizeof(s->run_dir), "%s", opt->run_dir);
        else
            default_run_dir(s->run_dir, sizeof(s->run_dir));
        s->ckpt_path[0] = '\0';
        if (strcmp(opt->resume, "none") == 0) {
            // A fresh start must not write over another run's checkpoints and metrics.
            int64_t existing =
                opt->mode == MODE_TRAIN ? checkpoint_find_latest(s->run_dir, NULL, 0) : -1;
            if (existing >= 0)
                snprintf(status_msg, sizeof(status_msg),
                         "--resume none: --run_dir %s already holds a run (ckpt_%lld.h5); "
                         "continue it with --resume auto, or start afresh in a new --run_dir",
                         s->run_dir, (long long)existing);
        } else if (strcmp(opt->resume, "auto") == 0) {
            checkpoint_find_latest(s->run_dir, s->ckpt_path, sizeof(s->ckpt_path));
        } else if (is_directory(opt->resume)) {
            if (checkpoint_find_latest(opt->resume, s->ckpt_path, sizeof(s->ckpt_path)) < 0)
                snprintf(status_msg, sizeof(status_msg),
                         "--resume %s: no complete checkpoint (ckpt_<step>.h5) in that directory",
                         opt->resume);
        } else if (access(opt->resume, R_OK) == 0) {
            snprintf(s->ckpt_path, sizeof(s->ckpt_path), "%s", opt->resume);
        } else {
            snprintf(status_msg, sizeof(status_msg), "--resume %s: cannot read that file (%s)",
                     opt->resume, strerror(errno));
        }
        if (!status_msg[0] && require_ckpt && !s->ckpt_path[0])
            snprintf(status_msg, sizeof(status_msg),
                     "%s needs a checkpoint: pass --resume PATH, or --run_dir DIR holding "
                     "ckpt_<step>.h5 (none found in %s)",
                     options_mode_name(opt->mode), s->run_dir);
    }
    broadcast_string(status_msg, sizeof(status_msg));
    if (status_msg[0])
        session_usage_error(s, "%s", status_msg);
    broadcast_string(s->run_dir, sizeof(s->run_dir));
    broadcast_string(s->ckpt_path, sizeof(s->ckpt_path));
    s->ckpt_step = -1;
    if (s->ckpt_path[0]) {
        // ckpt_<step>.h5 names the step; other names are read from the file on load.
        const char *base = strrchr(s->ckpt_path, '/');
        base = base ? base + 1 : s->ckpt_path;
        long long step = -1;
        if (sscanf(base, "ckpt_%lld.h5", &step) == 1)
            s->ckpt_step = step;
    }
    take_checkpoint_data(s);
    if (s->info.rank == 0 && opt->mode == MODE_TRAIN)
        make_dirs(s->run_dir);
    mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier(run dir)");
}

// ---- model configuration ------------------------------------------------------------------

// The vocabulary and sequence length a data spec fixes (0 = not fixed), known from the spec
// alone so the model can be configured before the data is opened.
static void data_hints(const char *spec, int *vocab, int *seq_len) {
    *vocab = 0;
    *seq_len = 0;
    if (!strcmp(spec, "tasks") || !strcmp(spec, "mqar") || !strcmp(spec, "facts")) {
        TaskSettings ts = data_task_settings_default();
        *vocab = data_tasks_min_vocab(&ts);
        *seq_len = 64; // the length the default task settings are sized for
    } else if (strncmp(spec, "text:", 5) == 0) {
        *vocab = 256;
    }
}

void session_resolve_config(Session *s, int from_checkpoint) {
    char err[512];
    if (from_checkpoint) {
        if (checkpoint_read_config(s->ckpt_path, &s->cfg, err, sizeof(err)) != 0)
            hs_fatal("cannot read the model configuration of %s: %s", s->ckpt_path, err);
        if (s->opt.n_overrides > 0 && s->info.rank == 0)
            fprintf(stderr,
                    "hspmn_dist: note: %s takes the model configuration from %s; "
                    "model flags are ignored\n",
                    options_mode_name(s->opt.mode), s->ckpt_path);
        return;
    }
    int vocab = 0, seq_len = 0;
    data_hints(s->opt.data, &vocab, &seq_len);
    if (options_model_config(&s->opt, vocab, seq_len, &s->cfg, err, sizeof(err)) != 0)
        session_usage_error(s, "%s", err);
    if (s->cfg.n_slots % s->info.world != 0)
        session_usage_error(s,
                            "--n_slots %d is not divisible by the number of ranks (%d): every "
                            "rank holds an equal shard of each slot table",
                            s->cfg.n_slots, s->info.world);
}

ModelOptions session_model_options(const Session *s) {
    const ModelOptions mo = {.refetch_slot_rows = s->opt.refetch_slot_rows,
                             .recompute_elementwise = s->opt.recompute_elementwise,
                             .bf16_activations = strcmp(s->opt.activations, "bf16") == 0};
    return mo;
}

void session_build_model(Session *s, int B) {
    session_check_backend_limits(s, &s->cfg);
    const ModelOptions mo = session_model_options(s);
    model_build_with(&s->model, &s->cfg, s->ops, s->comm, B, s->cfg.seq_len, &mo);
    s->model_built = 1;
}

void session_load_checkpoint(Session *s, float *m_host, float *v_host, CheckpointState *state,
                             int64_t *optim_step) {
    size_t n = s->model.layout.n_local;
    float *params = hs_malloc(n * sizeof(float));
    float *m = m_host ? m_host : hs_malloc(n * sizeof(float));
    float *v = v_host ? v_host : hs_malloc(n * sizeof(float));
    char err[1024];
    if (checkpoint_load(MPI_COMM_WORLD, s->ckpt_path, &s->cfg, &s->model.layout, params, m, v, NULL,
                        state, optim_step, err, sizeof(err)) != 0)
        hs_fatal("cannot resume from checkpoint %s: %s", s->ckpt_path, err);
    s->ops->copy_from_host(s->model.params, params, n * sizeof(float));
    s->ops->synchronize();
    if (!m_host)
        free(m);
    if (!v_host)
        free(v);
    free(params);
}

void session_open_data(Session *s, uint64_t seed) {
    char err[1024];
    if (data_open(&s->data, s->opt.data, s->cfg.seq_len, s->cfg.vocab_size, seed, NULL, err,
                  sizeof(err)) != 0)
        hs_fatal("--data %s: %s", s->opt.data, err);
    s->data_opened = 1;
}

// ---- the configuration table ----------------------------------------------------------------

static void print_row(const char *name, const char *value) {
    printf("  %-22s %s\n", name, value);
}

void session_print_config(const Session *s, int accum_steps) {
    if (s->info.rank != 0)
        return;
    const Options *o = &s->opt;
    char v[256];
    printf("hspmn_dist %s\n", options_mode_name(o->mode));
    printf("-- run ------------------------------------------\n");
    snprintf(v, sizeof(v), "%d (%d on this node)", s->info.world, s->info.local_world);
    print_row("ranks", v);
    print_row("device", s->ops->name);
    if (s->ops->kind == BACKEND_CPU && strcmp(o->matmul, "fp32") != 0)
        snprintf(v, sizeof(v), "%s asked, fp32 used (the cpu backend is always fp32)", o->matmul);
    else
        snprintf(v, sizeof(v), "%s", o->matmul);
    print_row("matmul", v);
    print_row("comm", s->comm_kind == COMM_NCCL ? "nccl" : "mpi");
    snprintf(v, sizeof(v), "%d per rank", s->threads);
    print_row("threads", v);
    print_row("data", o->data);
    print_row("run_dir", s->run_dir);
    print_row("checkpoint", s->ckpt_path[0] ? s->ckpt_path : "(fresh start)");
    printf("-- model (preset %s) -----------------------------\n", o->preset);
    for (int i = 0; model_config_names[i]; i++) {
        model_config_get(&s->cfg, model_config_names[i], v, sizeof(v));
        print_row(model_config_names[i], v);
    }
    snprintf(v, sizeof(v), "%d of %d tokens", model_n_selected(&s->cfg, s->cfg.seq_len),
             s->cfg.seq_len);
    print_row("attention queries", v);
    const ParamLayout *layout = &s->model.layout;
    int64_t total = param_layout_global_count(layout);
    int64_t dense = (int64_t)layout->n_dense;
    snprintf(v, sizeof(v), "%.3f M", (double)dense / 1e6);
    print_row("params dense", v);
    snprintf(v, sizeof(v), "%.3f M (%d shards of %d slots)", (double)(total - dense) / 1e6,
             s->info.world, s->cfg.n_slots / s->info.world);
    print_row("params slot tables", v);
    snprintf(v, sizeof(v), "%.3f M", (double)total / 1e6);
    print_row("params total", v);
    // params + grads + AdamW m and v, fp32
    snprintf(v, sizeof(v), "%.1f MiB (params, grads, m, v)",
             4.0 * 4.0 * (double)layout->n_local / (1024.0 * 1024.0));
    print_row("state per rank", v);
    snprintf(v, sizeof(v), "%s; norm, conv and GELU outputs %s",
             s->cfg.ffn != FFN_MEMORY ? "no slot rows (ffn=dense)"
             : o->refetch_slot_rows   ? "slot rows fetched again"
                                      : "slot rows kept",
             o->recompute_elementwise ? "recomputed" : "kept");
    print_row("backward memory", v);
    print_row("activations", strcmp(o->activations, "bf16") == 0
                                 ? "bf16 between forward and backward (one fp32 working layer)"
                                 : "fp32");
    if (o->mode == MODE_TRAIN) {
        printf("-- training ---------------------------------------\n");
        snprintf(v, sizeof(v), "%d sequences = %d per rank x %d ranks x %d accumulation", o->batch,
                 o->micro_batch, s->info.world, accum_steps);
        print_row("batch", v);
        snprintf(v, sizeof(v), "%lld tokens", (long long)o->batch * s->cfg.seq_len);
        print_row("tokens per step", v);
        snprintf(v, sizeof(v), "%d", o->steps);
        print_row("steps", v);
        snprintf(v, sizeof(v), "%g, warmup %d, cosine to %g x", o->lr, o->warmup, o->min_lr_frac);
        print_row("lr", v);
        snprintf(v, sizeof(v), "%g", o->weight_decay);
        print_row("weight_decay", v);
        snprintf(v, sizeof(v), "%g", o->grad_clip);
        print_row("grad_clip", v);
        snprintf(v, sizeof(v), "%g", o->slot_value_lr_mult);
        print_row("slot_value_lr_mult", v);
        snprintf(v, sizeof(v), "%llu", (unsigned long long)o->seed);
        print_row("seed", v);
        snprintf(v, sizeof(v), "every %d steps, keep %d", o->ckpt_every, o->keep);
        print_row("checkpoints", v);
        snprintf(v, sizeof(v), "every %d steps, %d batches", o->eval_every, o->eval_batches);
        print_row("eval", v);
    }
    printf("---------------------------------------------------\n");
    fflush(stdout);
}

void session_close(Session *s) {
    if (s->data_opened)
        data_close(&s->data);
    if (s->model_built)
        model_free(&s->model);
    comm_destroy(s->comm);
    s->ops->shutdown();
}
