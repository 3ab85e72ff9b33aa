"""An MLflow-instrumented scikit-learn script that runs unchanged against aicloud (docs/mlflow.md).

On your machine or in a notebook, point MLflow at the control plane:

    export MLFLOW_TRACKING_URI=$AICLOUD_URL/mlflow MLFLOW_TRACKING_TOKEN=$AICLOUD_TOKEN
    python examples/mlflow_train.py

As a command job (``command: python mlflow_train.py``) aicloud sets both, and the script's run is
the job's run. Either way the run, its params, its learning curve and its report are aicloud's:
``aicloud run list --job ...``, ``aicloud run show RUN`` and the console show them.
"""

from __future__ import annotations

import mlflow
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
from sklearn.model_selection import train_test_split


def main() -> None:
    mlflow.set_experiment("digits-sklearn")
    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features / 16.0, labels, test_size=0.25, random_state=0, stratify=labels
    )
    params = {"C": 1.0, "max_iter": 1000}
    with mlflow.start_run(run_name="logistic-regression") as run:
        mlflow.log_params({**params, "train_rows": len(x_train)})
        # a learning curve: accuracy on the held-out rows as the model sees more training rows
        for step, rows in enumerate((100, 300, 600, len(x_train))):
            model = LogisticRegression(**params).fit(x_train[:rows], y_train[:rows])
            predicted = model.predict(x_test)
            mlflow.log_metrics(
                {"val_accuracy": accuracy_score(y_test, predicted), "train_rows": rows}, step=step
            )
        mlflow.set_tag("model", "LogisticRegression")
        mlflow.log_dict(classification_report(y_test, predicted, output_dict=True), "report.json")
        mlflow.log_text(str(confusion_matrix(y_test, predicted)), "confusion_matrix.txt")
        print(f"run {run.info.run_id}: val_accuracy {accuracy_score(y_test, predicted):.3f}")


if __name__ == "__main__":
    main()
