"""Python's multiprocessing.Pool, measured the way examples/pool_bench.rs measures hpcbox-pool.

Prints `key value` lines. Run by bench/pool/run.sh in the same run as the Rust side.
"""
import time
from multiprocessing import Pool


def addit(x):
    return x + 1


def best(runs, f):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    # Start and stop first, in a small process, as the Rust side does: median of 50 rounds.
    rounds = []
    for _ in range(50):
        t = time.perf_counter()
        with Pool(2) as p:
            p.map(addit, [1])
        rounds.append((time.perf_counter() - t) * 1e3)
    rounds.sort()
    print(f"py_start_stop_ms {rounds[len(rounds) // 2]:.4f}")
    n = 1_000_000
    items = list(range(n))
    with Pool(2) as p:
        assert p.map(addit, items[:10]) == [x + 1 for x in items[:10]]
        d = best(5, lambda: p.map(addit, items))
        print(f"py_map_default_us_per_item {d * 1e6 / n:.5f}")
        n1 = 100_000
        small = list(range(n1))
        d = best(2, lambda: p.map(addit, small, chunksize=1))
        print(f"py_map_chunksize1_us_per_item {d * 1e6 / n1:.5f}")


if __name__ == "__main__":
    main()
