// Checking MPI calls: every MPI call in dist/ goes through mpi_check so a failure prints
// file:line, what was being done and MPI's own reason (MPI_Error_string), then ends the job.
// The communicators are set to MPI_ERRORS_RETURN so the codes reach us instead of MPI
// aborting silently.
#pragma once
#include <mpi.h>

// Fatal error when err != MPI_SUCCESS, naming `what` and MPI's reason.
void mpi_check_at(const char *file, int line, int err, const char *what);
#define mpi_check(err, what) mpi_check_at(__FILE__, __LINE__, (err), (what))
