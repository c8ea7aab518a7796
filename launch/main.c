// hspmn_dist: the command-line entry point (train | eval | sample | bench). Parsing and set-up live
// in launch/lib/; this file only starts MPI, reads the flags and hands over to the mode.
#include <stdio.h>
#include <string.h>

#include "dist/comm.h"
#include "launch/lib/bench.h"
#include "launch/lib/eval.h"
#include "launch/lib/options.h"
#include "launch/lib/sample.h"
#include "launch/lib/session.h"
#include "launch/lib/train.h"

int main(int argc, char **argv) {
    static Session session; // large (paths, model): not on the stack
    Session *s = &session;
    memset(s, 0, sizeof(*s));
    dist_init(&argc, &argv, &s->info);

    // Every rank parses the same argv, so every rank takes the same branch below.
    char err[1024];
    if (options_parse(&s->opt, argc, argv, err, sizeof(err)) != 0)
        session_usage_error(s, "%s", err);
    if (s->opt.help) {
        if (s->info.rank == 0)
            options_print_help(stdout);
        dist_finalize();
        return 0;
    }

    session_open_backend(s);
    int code = 0;
    switch (s->opt.mode) {
    case MODE_TRAIN:
        code = train_main(s);
        break;
    case MODE_EVAL:
        code = eval_main(s);
        break;
    case MODE_SAMPLE:
        code = sample_main(s);
        break;
    case MODE_BENCH:
        code = bench_main(s);
        break;
    }
    session_close(s);
    dist_finalize();
    return code;
}
