"""The lesson's Monte Carlo pi with Python's multiprocessing.Pool: the peer of
`computepi --pool N` in bench/scale/run.sh.

Usage: python3 pi_pool.py PROCESSES SAMPLES

The samples are cut into one chunk per process, each chunk counted with its own seeded
generator (`random.Random`), as the lesson's computepi_multiprocs.py farms them out with
`Pool.map`. Prints `pi=<estimate> processes=<n> samples=<n>`.
"""
import random
import sys
from multiprocessing import Pool


def hits(chunk):
    seed, n = chunk
    rng = random.Random(seed)
    draw = rng.random
    inside = 0
    for _ in range(n):
        x, y = draw(), draw()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def main():
    processes, samples = int(sys.argv[1]), int(float(sys.argv[2]))
    base, extra = divmod(samples, processes)
    chunks = [(seed, base + (seed < extra)) for seed in range(processes)]
    with Pool(processes) as pool:
        inside = sum(pool.map(hits, chunks, chunksize=1))
    print(f"pi={4.0 * inside / samples:.8f} processes={processes} samples={samples}")


if __name__ == "__main__":
    main()
