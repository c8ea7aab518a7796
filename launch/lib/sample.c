// Autoregressive sampling. There is no KV cache: every new token re-runs the forward over
// the whole context (padded to T), which is exact because every stream of the model is
// causal, and with route=threshold so is the choice of attention queries. Every rank runs
// the same forward (the slot exchange is collective); rank 0 draws the token and
// broadcasts it.
#include "launch/lib/sample.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/mpi_check.h"
#include "kernels/error.h"

// Prompt token ids from --prompt_ids "1,2,3" or the bytes of --prompt. Returns the count.
static int read_prompt(Session *s, int32_t *ids, int cap) {
    const Options *o = &s->opt;
    const int V = s->cfg.vocab_size;
    int n = 0;
    if (o->prompt_ids[0]) {
        const char *p = o->prompt_ids;
        while (*p) {
            char *end = NULL;
            errno = 0;
            long id = strtol(p, &end, 10);
            if (end == p || errno == ERANGE || (*end != ',' && *end != '\0'))
                session_usage_error(s,
                                    "--prompt_ids: '%s' is not a comma-separated list of "
                                    "token ids",
                                    o->prompt_ids);
            if (id < 0 || id >= V)
                session_usage_error(s, "--prompt_ids: token %ld is outside the vocabulary [0, %d)",
                                    id, V);
            if (n == cap)
                session_usage_error(s, "--prompt_ids: %d tokens do not fit the context of %d",
                                    n + 1, cap);
            ids[n++] = (int32_t)id;
            p = *end == ',' ? end + 1 : end;
        }
    } else if (o->prompt[0]) {
        if (V < 256)
            session_usage_error(s,
                                "--prompt: text needs a byte vocabulary (V >= 256), this "
                                "model has V = %d; use --prompt_ids",
                                V);
        for (const unsigned char *c = (const unsigned char *)o->prompt; *c; c++) {
            if (n == cap)
                session_usage_error(s, "--prompt: %zu bytes do not fit the context of %d",
                                    strlen(o->prompt), cap);
            ids[n++] = *c;
        }
    }
    if (n == 0)
        session_usage_error(s, "sample needs a prompt: --prompt \"text\" or --prompt_ids 1,2,3");
    return n;
}

// splitmix64: a small seeded stream for drawing tokens (rank 0 only).
static double next_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Pick a token from logits [V]: greedy at temperature 0, else softmax(logits / temperature)
// restricted to the top_k likeliest (0 = all).
static int32_t draw_token(const float *logits, int V, double temperature, int top_k, uint64_t *rng,
                          double *probs) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best])
            best = v;
    if (temperature <= 0.0)
        return best;
    // The k-th largest logit is the cut-off (ties at the cut-off all stay in).
    float cutoff = -INFINITY;
    if (top_k > 0 && top_k < V) {
        for (int v = 0; v < V; v++)
            probs[v] = logits[v];
        for (int k = 0; k < top_k; k++) {
            int arg = -1;
            for (int v = 0; v < V; v++)
                if (probs[v] != -INFINITY && (arg < 0 || probs[v] > probs[arg]))
                    arg = v;
            cutoff = (float)probs[arg];
            probs[arg] = -INFINITY;
        }
    }
    double total = 0.0;
    for (int v = 0; v < V; v++) {
        probs[v] = logits[v] >= cutoff ? exp((logits[v] - logits[best]) / temperature) : 0.0;
        total += probs[v];
    }
    double u = next_uniform(rng) * total;
    for (int v = 0; v < V; v++) {
        u -= probs[v];
        if (u <= 0.0 && probs[v] > 0.0)
            return v;
    }
    return best;
}

static void print_result(const Session *s, const int32_t *ids, int n_prompt, int n) {
    printf("prompt_ids:");
    for (int i = 0; i < n_prompt; i++)
        printf(" %d", ids[i]);
    printf("\ngenerated_ids:");
    for (int i = n_prompt; i < n; i++)
        printf(" %d", ids[i]);
    printf("\n");
    if (s->cfg.vocab_size == 256) {
        // Byte data: show the text, escaping what would not print.
        printf("text: ");
        for (int i = 0; i < n; i++) {
            if (i == n_prompt)
                printf("|");
            int c = ids[i];
            if (isprint(c) || c == '\n')
                putchar(c);
            else
                printf("\\x%02x", c);
        }
        printf("\n");
    }
    fflush(stdout);
}

int sample_main(Session *s) {
    session_resolve_run(s, 1);
    session_resolve_config(s, 1);
    // Generation cannot see the future: the model routes by threshold. The checkpoint was
    // trained with top-n routing, which is what its /config says and what loading checks.
    const RouteKind trained_route = s->cfg.route;
    s->cfg.route = ROUTE_THRESHOLD;
    session_build_model(s, 1);
    s->cfg.route = trained_route;
    session_load_checkpoint(s, NULL, NULL, NULL, NULL);
    s->cfg.route = ROUTE_THRESHOLD;
    session_print_config(s, 1);

    const int T = s->cfg.seq_len, V = s->cfg.vocab_size;
    int32_t *ids = hs_calloc((size_t)T, sizeof(int32_t)); // [T] context, zero-padded
    int n = read_prompt(s, ids, T);
    const int n_prompt = n;
    int32_t *tokens = s->ops->alloc((size_t)T * sizeof(int32_t));
    float *logits = hs_malloc((size_t)V * sizeof(float));
    double *probs = hs_malloc((size_t)V * sizeof(double));
    uint64_t rng = s->opt.seed;
    for (int i = 0; i < s->opt.max_new_tokens && n < T; i++) {
        s->ops->copy_from_host(tokens, ids, (size_t)T * sizeof(int32_t));
        ForwardArgs args = {.tokens = tokens,
                            .targets = NULL,
                            .training = 0,
                            .ce_scale = 1.0f,
                            .token_scale = 1.0f,
                            .seq_scale = 1.0f};
        model_forward(&s->model, &args);
        s->ops->copy_to_host(logits, model_logits(&s->model, n - 1, 1), (size_t)V * sizeof(float));
        int32_t next = 0;
        if (s->info.rank == 0)
            next = draw_token(logits, V, s->opt.temperature, s->opt.sample_top_k, &rng, probs);
        mpi_check(MPI_Bcast(&next, 1, MPI_INT32_T, 0, MPI_COMM_WORLD), "MPI_Bcast(token)");
        ids[n++] = next;
    }
    if (n == T && s->info.rank == 0 && n - n_prompt < s->opt.max_new_tokens)
        printf("note: stopped at the context length T = %d\n", T);
    if (s->info.rank == 0)
        print_result(s, ids, n_prompt, n);
    free(probs);
    free(logits);
    s->ops->free(tokens);
    free(ids);
    return 0;
}
