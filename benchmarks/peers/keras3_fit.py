"""The same network in Keras 3 (TensorFlow backend), trained by ``model.fit``: what a TF 2.x user
writes today. Keras shuffles with its own generator, so its table is its own.

Requirements (bnmnist's own environment has them): tensorflow==2.21.0 (which brings keras 3)
"""

import os
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.pop("TF_USE_LEGACY_KERAS", None)  # Keras 3, not tf-keras
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import keras  # noqa: E402

X_train, y_train, X_valid, y_valid = common.mnist()
keras.utils.set_random_seed(42)


def layer(units, last=False):
    dense = keras.layers.Dense(units, kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in"))
    bn = keras.layers.BatchNormalization(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON)
    return [dense, bn] if last else [dense, bn, keras.layers.Activation("elu")]


model = keras.Sequential([keras.Input((784,)), *layer(300), *layer(100), *layer(10, last=True)])
model.compile(
    optimizer=keras.optimizers.SGD(common.LEARNING_RATE),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    jit_compile=False,  # what "auto" picks without a GPU
)


class Log(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        common.log(epoch, "Validation accuracy:", logs["val_accuracy"])


t0 = time.perf_counter()
history = model.fit(
    X_train, y_train, batch_size=common.BATCH, epochs=common.EPOCHS, shuffle=True, verbose=0,
    validation_data=(X_valid, y_valid), validation_batch_size=common.N_VALID, callbacks=[Log()],
)  # fmt: skip
common.report("keras3_fit", time.perf_counter() - t0, history.history["val_accuracy"], keras=keras.__version__)
