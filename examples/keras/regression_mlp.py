"""Seed 002: a Keras regression MLP, as the seed wrote it; only the data loading changed (docs/keras.md).

In an aicloud command job the dataset of role ``train`` (a CSV of the features and a ``target``
column, e.g. scikit-learn's diabetes set) is at ``AICLOUD_DATASET_TRAIN``; without it the script reads
``diabetes.csv`` next to it, or scikit-learn's own copy. Each epoch's loss, mae, val_loss and val_mae
go to the job's run by themselves (aicloud's Keras autolog); ``EPOCHS`` (default 100) shortens a run.

    client.jobs.run(command="python regression_mlp.py", code="examples/keras/regression_mlp.py",
                    datasets={"train": "diabetes"})
"""

import os

import numpy as np
import pandas as pd
from keras.layers import Dense
from keras.models import Sequential
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

# --- data loading: the job's dataset (the one change to the seed's code)
path = os.environ.get("AICLOUD_DATASET_TRAIN", "diabetes.csv")
if os.path.exists(path):
    frame = pd.read_csv(path)
else:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
y = frame.pop("target").to_numpy(dtype="float32")
X = frame.to_numpy(dtype="float32")

# --- the seed's code
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
scaler = StandardScaler()
X_train = scaler.fit_transform(X_train)
X_test = scaler.transform(X_test)

n = X_train.shape[1]
model = Sequential(
    [
        Dense(64, activation="relu", input_shape=(n,)),
        Dense(128, activation="relu"),
        Dense(1),
    ]
)
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
history = model.fit(
    X_train, y_train, epochs=int(os.environ.get("EPOCHS", "100")), batch_size=32, validation_split=0.2
)

loss, mae = model.evaluate(X_test, y_test, verbose=0)
print(f"test loss (mse): {loss:.2f}, test mae: {mae:.2f}")
predictions = model.predict(X_test[:5], verbose=0).ravel()
for want, got in zip(y_test[:5], predictions, strict=True):
    print(f"actual {want:6.1f}  predicted {got:6.1f}")
print("rmse", float(np.sqrt(loss)))
