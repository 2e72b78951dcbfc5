/* The recipe's openmpi-pingpong.c (/work/shared/recipes), measured in batches so that a busy
 * 2-core machine's pauses show less: every measure runs its iterations in 10 batches, each
 * after a barrier, and prints the best and the median batch. Adds allreduce of 1 MiB.
 * crates/comm/examples/pingpong.rs measures the same way, line for line; bench/comm/run.sh
 * builds this file with Open MPI's and MPICH's mpicc. Output lines (rank 0):
 *   <measure> best <s-per-op> median <s-per-op>
 * where measure is pp<bytes> (one-way time: round trip / 2), allreduce8, allreduce1M, barrier. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define BATCHES 10
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static void report(int r, const char *what, double *t) {
  qsort(t, BATCHES, sizeof *t, cmp);
  if (r == 0) printf("%s best %.9e median %.9e\n", what, t[0], t[BATCHES / 2]);
}
int main(int c, char **v) {
  MPI_Init(&c, &v);
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  size_t sizes[] = {8, 1024, 1 << 20, 16 << 20};
  double t[BATCHES];
  char name[64];
  for (int s = 0; s < 4; s++) {
    size_t n = sizes[s];
    char *b = malloc(n);
    memset(b, 1, n);
    int it = (n > 65536 ? 200 : 20000) / BATCHES;
    for (int k = 0; k < BATCHES; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      for (int i = 0; i < it; i++) {
        if (r == 0) {
          MPI_Send(b, n, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
          MPI_Recv(b, n, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (r == 1) {
          MPI_Recv(b, n, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          MPI_Send(b, n, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        }
      }
      t[k] = (MPI_Wtime() - t0) / it / 2;
    }
    snprintf(name, sizeof name, "pp%zu", n);
    report(r, name, t);
    free(b);
  }
  size_t counts[] = {1, (1 << 20) / sizeof(double)};
  const char *names[] = {"allreduce8", "allreduce1M"};
  for (int s = 0; s < 2; s++) {
    size_t n = counts[s];
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = 1;
    int it = (n * sizeof *x > 65536 ? 200 : 20000) / BATCHES;
    for (int k = 0; k < BATCHES; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      for (int i = 0; i < it; i++) MPI_Allreduce(x, y, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      t[k] = (MPI_Wtime() - t0) / it;
    }
    report(r, names[s], t);
    free(x);
    free(y);
  }
  int it = 20000 / BATCHES;
  for (int k = 0; k < BATCHES; k++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < it; i++) MPI_Barrier(MPI_COMM_WORLD);
    t[k] = (MPI_Wtime() - t0) / it;
  }
  report(r, "barrier", t);
  MPI_Finalize();
  return 0;
}
