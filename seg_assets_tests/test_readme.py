"""The README is the newcomer's map: every asset is on it and the feature dictionary is current."""

from pathlib import Path

from seg_assets.definitions import defs
from seg_assets.features.dictionary import README_BLOCK, readme_with_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_feature_dictionary_copy_is_in_sync():
    assert README_BLOCK.search(README) and readme_with_table(README) == README, "run `make dictionary` (features/dictionary.py)"


def test_every_asset_is_on_the_architecture_map():
    keys = [k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()]
    missing = [k for k in keys if f"`{k}`" not in README]
    assert not missing, missing


def test_every_in_progress_suffix_is_named():
    """The README tells writers which names are never read: the list is sources.py's (three were missing)."""
    from seg_assets.ingest.sources import IN_PROGRESS_SUFFIXES

    section = README[README.index("**When is a landing file read?**"):][:600]
    assert not [s for s in IN_PROGRESS_SUFFIXES if f"`{s}`" not in section]


def test_the_actions_yaml_example_is_the_catalogues_and_loads(tmp_path):
    """The README's actions.yaml is the one activation/catalogue.py documents, and it is a valid file."""
    from seg_assets.activation import catalogue

    block = catalogue.__doc__[catalogue.__doc__.index("```yaml"):]
    block = block[:block.index("```\n", 7) + 3]
    assert block in README
    (tmp_path / "actions.yaml").write_text(block.removeprefix("```yaml\n").removesuffix("```"))
    loaded = catalogue.load_catalogue(tmp_path)
    assert list(loaded.actions) == ["winback_10"] and loaded.holdout_of("spring_test") == 0.5
