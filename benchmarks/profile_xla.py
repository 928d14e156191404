"""Where the default (XLA) loop's time goes: compile, steps, and the matrix products alone.

    python benchmarks/profile_xla.py --data ../shared/data/mnist [--steps 275] [--threads 1,2]

Prints the one-off compile (a call that runs no step), the wall time per training step over
``--steps`` steps, and the time per step of the step's matrix products alone, compiled by XLA the
same way (a while loop of the same eight products), with one and with two intra-op threads, each
in a process of its own (TensorFlow sizes its intra-op pool once per process, at the first Session).
"""

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def step_products(n_inputs):
    """(m, k, n) of every matrix product of one training step at batch 200: the forward pass, the
    weight gradients and the input gradients of layers 2 and 3 (X needs none). The XLA loop's
    first layer has only the inputs in use (715 of MNIST's 784)."""
    return [
        (200, n_inputs, 300),
        (200, 300, 100),
        (200, 100, 10),
        (n_inputs, 200, 300),
        (300, 200, 100),
        (100, 200, 10),
        (200, 100, 300),
        (200, 10, 100),
    ]


def matmuls_only(tf, threads, n_inputs, reps=200):
    """Seconds per step of step_products(n_inputs) alone, in one XLA-compiled while loop."""
    import numpy as np

    tf1 = tf.compat.v1
    graph = tf.Graph()
    rng = np.random.RandomState(0)
    with graph.as_default():
        pairs = [
            (tf1.placeholder(tf.float32, (m, k)), tf1.placeholder(tf.float32, (k, n)))
            for m, k, n in step_products(n_inputs)
        ]
        feed = {p: rng.rand(*p.shape).astype(np.float32) for pair in pairs for p in pair}

        @tf.function(jit_compile=True, autograph=False)
        def loop():
            def body(i, total):
                eps = tf.cast(i, tf.float32) * 1e-6  # a new input each time round
                return i + 1, total + tf.add_n([tf.reduce_sum(tf.matmul(a + eps, b)) for a, b in pairs])

            return tf.while_loop(lambda i, _total: i < reps, body, [0, 0.0])[1]

        out = loop()
    sess = tf1.Session(
        graph=graph, config=tf1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    )
    sess.run(out, feed)
    best = min(_timed(sess.run, out, feed) for _ in range(3))
    return best / reps


def xla_loop(split, config, **options):
    """The default loop of a freshly initialised network, compiled: (loop, compile seconds).
    ``options`` override ``XlaEpochLoop``'s shortcuts (``drop_unused_inputs``, ``elu_as_cpu_kernel``)."""
    import tensorflow as tf

    from bnmnist.graph import build_graph
    from bnmnist.training_session import session_config
    from bnmnist.xla_loop import XlaEpochLoop

    h = build_graph(config)  # the XLA loop holds its own training set
    sess = tf.compat.v1.Session(graph=h.graph, config=session_config(config.run.threads))
    sess.run(h.init)
    loop = type("Loop", (XlaEpochLoop,), options)(sess, h, config, split.train_pixels, split.y_train)
    return loop, loop.compile(split.n_train, config.batch_size)


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"))
    ap.add_argument("--steps", type=int, default=275)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--matmuls-only", type=int, nargs=2, metavar=("THREADS", "INPUTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.matmuls_only:
        import tensorflow as tf

        print(matmuls_only(tf, *args.matmuls_only))
        return
    import numpy as np

    from bnmnist import data
    from bnmnist.config import Config
    from bnmnist.trainer import batch_indices

    split = data.split(data.load(args.data))
    config = Config().replace(threads=tuple(int(t) for t in args.threads.split(",")))
    loop, compile_s = xla_loop(split, config)
    loop.start_epoch(batch_indices(split.n_train, config.batch_size, np.random.RandomState(42)))
    rows = loop.groups[0][1]
    loop.run(0, 5)  # first executions
    n = min(args.steps, len(rows))
    step_s = _timed(loop.run, 5, n) / (n - 5)
    print(f"compile (a call that runs no step): {compile_s:.2f} s")
    print(f"training step, XLA loop: {step_s * 1e3:.2f} ms ({n - 5} steps, threads {config.run.threads})")
    n_inputs = len(loop.used_inputs)
    for threads in (1, 2):
        mm = float(
            subprocess.run(
                [sys.executable, __file__, "--matmuls-only", str(threads), str(n_inputs)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
        print(
            f"its 8 matrix products alone ({n_inputs} inputs), XLA, {threads} intra-op thread(s): "
            f"{mm * 1e3:.2f} ms per step ({mm / step_s:.0%} of the step)"
        )


if __name__ == "__main__":
    main()
