// `hspmn_dist sample`: generate from a checkpoint with causal routing (route=threshold).
#pragma once

#include "launch/lib/session.h"

// Returns the process exit code.
int sample_main(Session *s);
