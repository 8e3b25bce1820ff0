"""The one markdown-table writer of the UI's metadata: data in a cell never splits its row."""

import polars as pl

from seg_assets.markdown import frame, table


def test_cells_from_data_stay_in_their_column():
    text = table(["reason", "rows", "share"], [("bad | value\nsecond line", 3, 0.123456), (None, 0, None)])
    header, rule, first, second = text.split("\n")
    assert [c.strip() for c in header.strip("|").split("|")] == ["reason", "rows", "share"]
    assert rule.count("|") == 4 and rule.endswith(":|")  # numbers right-aligned
    assert "bad \\| value second line" in first and first.replace("\\|", "").count("|") == 4
    assert [c.strip() for c in second.strip("|").split("|")] == ["", "0", ""]


def test_ids_stay_text_and_floats_take_the_callers_format():
    text = frame(pl.DataFrame({"product_id": ["00123"], "auc": [0.5]}), floatfmt=".3f", missing="n/a")
    assert "00123" in text and "0.500" in text
    assert "n/a" in table(["auc"], [(None,)], missing="n/a")
