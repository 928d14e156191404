"""The book's own batch-norm cell, as printed, on TF 2.x: tf.compat.v1 in graph mode, the
``tf.layers`` functions from tf-keras, one ``sess.run`` with a ``feed_dict`` per step. The
baseline every speed-up is measured against; its table is TF 2.x's seeds', not the book's.

Requirements (bnmnist's own environment has them): tensorflow==2.21.0 tf-keras==2.21.0
"""

import os
import sys
import time
from functools import partial

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.layers, as TF 1.x had them
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
X_train, y_train, X_valid, y_valid = common.mnist()
n_inputs, n_hidden1, n_hidden2, n_outputs = common.SIZES
tf.reset_default_graph()  # the notebook's reset_graph(42)
tf.set_random_seed(42)
np.random.seed(42)

X = tf.placeholder(tf.float32, shape=(None, n_inputs), name="X")
y = tf.placeholder(tf.int32, shape=(None), name="y")
training = tf.placeholder_with_default(False, shape=(), name="training")
with tf.name_scope("dnn"):
    he_init = tf.variance_scaling_initializer()
    my_batch_norm_layer = partial(tf.layers.batch_normalization, training=training, momentum=common.BN_MOMENTUM)
    my_dense_layer = partial(tf.layers.dense, kernel_initializer=he_init)
    hidden1 = my_dense_layer(X, n_hidden1, name="hidden1")
    bn1 = tf.nn.elu(my_batch_norm_layer(hidden1))
    hidden2 = my_dense_layer(bn1, n_hidden2, name="hidden2")
    bn2 = tf.nn.elu(my_batch_norm_layer(hidden2))
    logits_before_bn = my_dense_layer(bn2, n_outputs, name="outputs")
    logits = my_batch_norm_layer(logits_before_bn)
with tf.name_scope("loss"):
    xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    loss = tf.reduce_mean(xentropy, name="loss")
with tf.name_scope("train"):
    training_op = tf.train.GradientDescentOptimizer(common.LEARNING_RATE).minimize(loss)
with tf.name_scope("eval"):
    correct = tf.nn.in_top_k(logits, y, 1)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
extra_update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)

accs = []
with tf.Session() as sess:
    tf.global_variables_initializer().run()
    t0 = time.perf_counter()
    for epoch in range(common.EPOCHS):
        for idx in common.epoch_batches(len(X_train)):
            sess.run([training_op, extra_update_ops], feed_dict={training: True, X: X_train[idx], y: y_train[idx]})
        accs.append(accuracy.eval(feed_dict={X: X_valid, y: y_valid}))
        common.log(epoch, "Validation accuracy:", accs[-1])
    train_s = time.perf_counter() - t0
common.report("book_tf1", train_s, accs, tensorflow=tf.VERSION)
