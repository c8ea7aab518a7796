// Held-out evaluation, also run periodically by the training loop.
#include "launch/lib/eval.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "dist/mpi_check.h"
#include "kernels/error.h"
#include "launch/lib/batch.h"

void eval_run(Session *s, int n_batches, EvalResult *out) {
    Model *m = &s->model;
    const int B = m->B, T = m->T;
    const int world = s->info.world, rank = s->info.rank;
    Batch batch;
    batch_alloc(&batch, s->ops, B, T);
    // The forward's argmax of every token's logits (ties: lower token first).
    int32_t *predictions = hs_malloc((size_t)B * T * sizeof(int32_t));
    TaskAccuracy acc = {{0}, {0}};
    double ce_sum = 0.0; // summed CE over this rank's scored tokens

    for (int i = 0; i < n_batches; i++) {
        // Eval batch i covers sequences [i * B * world, (i + 1) * B * world) of the split.
        int64_t first = data_batch_first_index((int64_t)i * B * world, 0, rank, world, B);
        batch_read(&batch, &s->data, first, 1);
        batch_upload(&batch, s->ops);
        // ce_scale 1: the loss buffer holds this rank's CE sum; the mean is taken below
        // over the scored tokens of every rank.
        ForwardArgs args = {.tokens = batch.tokens,
                            .targets = batch.targets,
                            .training = 0,
                            .seed = 0,
                            .step = 0,
                            .seq_offset = (uint32_t)first,
                            .ce_scale = 1.0f,
                            .token_scale = 1.0f / (float)(B * T * world),
                            .seq_scale = 1.0f / (float)(B * world)};
        model_forward(m, &args);
        ce_sum += model_losses(m).ce;
        s->ops->copy_to_host(predictions, m->predictions, (size_t)B * T * sizeof(int32_t));
        for (int b = 0; b < B; b++)
            data_accuracy_add(&acc, &s->data, first + b, predictions + (size_t)b * T,
                              batch.targets_host + (size_t)b * T, T);
    }

    comm_host_sum_f64(s->comm, &ce_sum, 1);
    const int n_counts = DATA_N_TASKS + 1;
    mpi_check(
        MPI_Allreduce(MPI_IN_PLACE, acc.correct, n_counts, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD),
        "MPI_Allreduce(eval correct)");
    mpi_check(
        MPI_Allreduce(MPI_IN_PLACE, acc.total, n_counts, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD),
        "MPI_Allreduce(eval total)");
    int64_t correct = 0, total = 0;
    for (int t = 0; t < n_counts; t++) {
        out->accuracy[t] = data_accuracy(&acc, (TaskKind)t);
        correct += acc.correct[t];
        total += acc.total[t];
    }
    out->tokens = total;
    out->loss = total > 0 ? ce_sum / (double)total : NAN;
    out->accuracy_all = total > 0 ? (double)correct / (double)total : NAN;

    free(predictions);
    batch_free(&batch, s->ops);
}

void eval_print(const Session *s, const EvalResult *r, int64_t step) {
    if (s->info.rank != 0)
        return;
    printf("eval step %lld: loss %.4f | acc", (long long)step, r->loss);
    for (int t = 0; t <= DATA_N_TASKS; t++)
        if (!isnan(r->accuracy[t]))
            printf(" %s %.3f", data_task_name((TaskKind)t), r->accuracy[t]);
    printf(" | all %.3f over %lld tokens\n", r->accuracy_all, (long long)r->tokens);
    fflush(stdout);
}

int eval_main(Session *s) {
    session_resolve_run(s, 1);
    session_resolve_config(s, 1);
    session_build_model(s, s->opt.micro_batch);
    CheckpointState state;
    session_load_checkpoint(s, NULL, NULL, &state, NULL);
    session_print_config(s, 1);
    session_open_data(s, state.seed);
    EvalResult r;
    eval_run(s, s->opt.eval_batches, &r);
    eval_print(s, &r, state.step);
    return 0;
}
