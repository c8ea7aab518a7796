// hspmn_dist: the command-line entry point (train | eval | sample | bench).
#include <stdio.h>

int main(void) {
    fprintf(stderr, "hspmn_dist: under construction\n");
    return 1;
}
