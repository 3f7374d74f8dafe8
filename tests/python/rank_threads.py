"""One thread per rank, for the Python tests: several ranks of one process, each on its own
communicator (ctypes releases the GIL during library calls, so they run concurrently)."""

import contextlib
import threading


def run_ranks(comms, fn, context=contextlib.nullcontext):
    """fn(rank, comm) for every communicator, one thread each, inside context(); returns
    (results, errors) with None where a rank raised nothing or returned nothing."""
    n = len(comms)
    results, errors = [None] * n, [None] * n

    def body(r):
        try:
            with context():
                results[r] = fn(r, comms[r])
        except Exception as e:  # noqa: BLE001 - handed back to the calling thread
            errors[r] = e

    threads = [threading.Thread(target=body, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def results_or_raise(comms, fn, context=contextlib.nullcontext):
    """run_ranks(), re-raising the first rank's error."""
    results, errors = run_ranks(comms, fn, context)
    for e in errors:
        if e is not None:
            raise e
    return results
