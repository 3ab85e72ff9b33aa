"""Seed 003: the MNIST-style Keras CNN on scikit-learn's 8x8 digits; only the data loading and the
last line (``save_model``) are added to the seed's code (docs/keras.md).

In an aicloud command job the dataset of role ``train`` (a CSV of 64 pixel columns, values 0-16,
and a ``label`` column) is at ``AICLOUD_DATASET_TRAIN``; without it the script reads ``digits.csv``
next to it, or scikit-learn's own copy. Each epoch's loss, accuracy, val_loss and val_accuracy go to
the job's run by themselves (aicloud's Keras autolog); ``save_model`` registers the trained CNN as an
ONNX model version (``MODEL_NAME``, default ``digits-keras``) that deploys like any other.
``EPOCHS`` (default 100) shortens a run. On TensorFlow: ``KERAS_BACKEND=tensorflow`` and a
runtime env with tensorflow-cpu and tf2onnx (docs/keras.md).
"""

import os

import pandas as pd
from keras.layers import Conv2D, Dense, Flatten, MaxPooling2D
from keras.models import Sequential
from sklearn.model_selection import train_test_split

from aicloud.training import save_model

# --- data loading: the job's dataset (one of the two changes to the seed's code)
path = os.environ.get("AICLOUD_DATASET_TRAIN", "digits.csv")
if os.path.exists(path):
    frame = pd.read_csv(path)
else:
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
y = frame.pop("label").to_numpy(dtype="int64")
X = frame.to_numpy(dtype="float32").reshape(-1, 8, 8, 1) / 16.0

# --- the seed's code (the 28x28 kernel and pool sizes fit 8x8 as they are)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)

model = Sequential(
    [
        Conv2D(32, (3, 3), activation="relu", input_shape=(8, 8, 1)),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ]
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(X_train, y_train, epochs=int(os.environ.get("EPOCHS", "100")), batch_size=32, validation_split=0.1)
test_loss, test_accuracy = model.evaluate(X_test, y_test, verbose=0)
print(f"test accuracy: {test_accuracy:.4f} (loss {test_loss:.4f})")

# --- the one added line: register the CNN as an ONNX model version
version = save_model(model, name=os.environ.get("MODEL_NAME", "digits-keras"), example_input=X_test[:8])
print("registered", version.get("name"), version.get("version"))
