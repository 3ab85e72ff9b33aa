"""Write the files the README walk-through uses: digits.csv and rows.json, next to this script.

    .venv/bin/python examples/make_data.py

digits.csv: scikit-learn's 1,797 handwritten digits, 8x8 pixels as 64 numeric columns
(``pixel_0_0`` ... ``pixel_7_7``) and the digit as ``label``. rows.json: the first 5 rows without
their label, as ``{"inputs": [[64 numbers], ...]}``, the body ``aicloud predict --input`` sends.
"""

from __future__ import annotations

import json
from pathlib import Path

from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent


def main(folder: Path = HERE) -> None:
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv(folder / "digits.csv", index=False)
    rows = frame.drop(columns="label").head(5).to_numpy().tolist()
    (folder / "rows.json").write_text(json.dumps({"inputs": rows}) + "\n")
    labels = frame["label"].head(5).tolist()
    print(f"wrote {folder / 'digits.csv'} ({len(frame)} rows) and {folder / 'rows.json'} (labels {labels})")


if __name__ == "__main__":
    main()
