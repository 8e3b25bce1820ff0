"""The staples of a warehouse's baskets as of a time, by the model's own rule (recommend/model.py), with the delivered
product ids: the pipeline tests check that a product just bought is listed again only if it is one."""

from datetime import datetime

from seg_assets.recommend import model as M
from seg_assets.recommend.assets import SEGMENTS


def staples(con, as_of: datetime) -> set[str]:
    s = M.RecSettings()
    M.load(con, s, SEGMENTS)
    M.model_tables(con, s, {"_st_": (as_of, True)})
    names = {n for (n,) in con.sql(f"SELECT p.name FROM _st_staple s JOIN {M.PRODUCTS} p ON p.code = s.product_id").fetchall()}
    M.drop_model_tables(con, "_st_")
    M.unload(con)
    return names
