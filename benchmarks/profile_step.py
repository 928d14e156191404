"""Per-op profile of one step of the book's per-step loop (``--feed-dict``): where its time goes.

    python benchmarks/profile_step.py --data ../shared/data/mnist [--steps 100] [--threads 1,2]

Traces ``--steps`` steps of the book's ``feed_dict`` loop (after 20 warm-up steps) with TensorFlow's step
stats and prints the ops by total time per step, grouped by op type and listed individually,
with the share of the summed op time and the wall time per step.
"""

import argparse
import collections
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    import numpy as np
    import tensorflow as tf

    from bnmnist import data
    from bnmnist.config import Config
    from bnmnist.graph import build_graph
    from bnmnist.trainer import batch_indices
    from bnmnist.training_session import session_config

    tf1 = tf.compat.v1
    split = data.split(data.load(args.data))
    threads = tuple(int(t) for t in args.threads.split(","))
    h = build_graph(Config().replace(loop="feed_dict"))
    sess = tf1.Session(graph=h.graph, config=session_config(threads))
    sess.run(h.init)
    fetches = [h.training_op, h.extra_update_ops, h.loss]

    def feed(idx):
        return {h.X: split.X_train[idx], h.y: split.y_train[idx], h.training: True}

    idxs = batch_indices(split.n_train, 200, np.random.RandomState(42))
    for idx in idxs[:20]:
        sess.run(fetches, feed(idx))
    t = time.perf_counter()
    for idx in idxs[20 : 20 + args.steps]:
        sess.run(fetches, feed(idx))
    wall = (time.perf_counter() - t) / args.steps
    by_op, by_type = collections.Counter(), collections.Counter()
    options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
    for idx in idxs[20 : 20 + args.steps]:
        md = tf1.RunMetadata()
        sess.run(fetches, feed(idx), options=options, run_metadata=md)
        for dev in md.step_stats.dev_stats:
            for n in dev.node_stats:
                op_type = n.timeline_label.split(" = ")[-1].split("(")[0] if n.timeline_label else n.node_name
                by_op[n.node_name] += n.all_end_rel_micros / args.steps
                by_type[op_type] += n.all_end_rel_micros / args.steps
    total = sum(by_op.values())
    print(
        f"wall time per step (untraced): {wall * 1e3:.2f} ms; summed op time per step (traced): "
        f"{total / 1e3:.2f} ms; threads {threads}"
    )
    print(f"\n{'op type':<40} {'us/step':>8} {'share':>6}")
    for name, us in by_type.most_common(args.top):
        print(f"{name:<40} {us:8.0f} {us / total:6.1%}")
    print(f"\n{'op':<70} {'us/step':>8} {'share':>6}")
    for name, us in by_op.most_common(args.top):
        print(f"{name:<70} {us:8.0f} {us / total:6.1%}")


if __name__ == "__main__":
    main()
