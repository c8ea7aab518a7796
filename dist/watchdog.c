// The hung-job watchdog (dist/watchdog.h): one thread per rank that polls the time of the
// last beat once a second.
#include "dist/watchdog.h"

#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kernels/error.h"

struct Watchdog {
    double timeout_s;
    int rank;
    pthread_t thread;
    // Under `lock`: the last beat (written by the training thread, read by the watchdog
    // thread) and the stop request, which `wake` signals so that stopping is immediate.
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    double last_beat_s;
    const char *what;
    int64_t step;
};

static double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Wakes once a second (or when stopped) and aborts the job once the last beat is older than
// the timeout.
static void *watchdog_main(void *arg) {
    Watchdog *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until); // the clock pthread_cond_timedwait uses
        until.tv_sec += 1;
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
        double silent = monotonic_seconds() - w->last_beat_s;
        if (w->stop || silent <= w->timeout_s)
            continue;
        fprintf(stderr,
                "error: rank %d: no progress for %.0f s since the start of %s %lld "
                "(--step_timeout %g): a rank may have died or hung, or a collective (MPI or "
                "NCCL) is stuck; aborting the job. Checkpoints already written are complete: "
                "resume from the last one.\n",
                w->rank, silent, w->what, (long long)w->step, w->timeout_s);
        fflush(stderr);
        fflush(stdout);
        // MPI_Abort from this thread: the main thread is stuck and cannot make the call.
        // Should MPI not end the process, leave with the same status ourselves.
        MPI_Abort(MPI_COMM_WORLD, 3);
        _exit(3);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

Watchdog *watchdog_start(double timeout_s, int rank) {
    if (timeout_s <= 0.0)
        return NULL;
    Watchdog *w = hs_calloc(1, sizeof(Watchdog));
    w->timeout_s = timeout_s;
    w->rank = rank;
    w->what = "the run";
    w->step = 0;
    w->last_beat_s = monotonic_seconds();
    if (pthread_mutex_init(&w->lock, NULL) != 0 || pthread_cond_init(&w->wake, NULL) != 0)
        hs_fatal("watchdog: pthread_mutex_init or pthread_cond_init failed");
    if (pthread_create(&w->thread, NULL, watchdog_main, w) != 0)
        hs_fatal("watchdog: pthread_create failed (--step_timeout %g)", timeout_s);
    return w;
}

void watchdog_beat(Watchdog *w, const char *what, int64_t step) {
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->last_beat_s = monotonic_seconds();
    w->what = what;
    w->step = step;
    pthread_mutex_unlock(&w->lock);
}

void watchdog_stop(Watchdog *w) {
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
