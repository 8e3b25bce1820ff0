"""Every YAML the project reads (sources.yaml, actions.yaml, --config, --set): one loader, one line per problem."""

import time

import pytest

from seg_assets.activation.catalogue import ActionsConfigError, load_catalogue
from seg_assets.automation.run_config import SettingsError, load_config_file, parse_assignment
from seg_assets.ingest.source_config import SourceConfigError, load_sources

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.fixture(autouse=True)
def _no_env_paths(monkeypatch):
    monkeypatch.delenv("SEG_SOURCES_FILE", raising=False)
    monkeypatch.delenv("SEG_ACTIONS_FILE", raising=False)


def refusal(tmp_path, name: str, content: bytes | None) -> str:
    """The one line refusing ``content`` as ``name`` (None: a folder of that name)."""
    target = tmp_path / name
    target.mkdir() if content is None else target.write_bytes(content)
    load, error = {"sources.yaml": (load_sources, SourceConfigError),
                   "actions.yaml": (load_catalogue, ActionsConfigError)}[name]
    with pytest.raises(error) as err:
        load(tmp_path)
    message = str(err.value)
    assert "\n" not in message and name in message, message
    return message


@pytest.mark.parametrize("name", ["sources.yaml", "actions.yaml"])
@pytest.mark.parametrize("content, words", [
    (BOMB.encode(), "anchors and aliases"),
    (b"base: &b {share: 0.1}\ncontrol: *b\n", "anchors and aliases"),
    (b"control:\n  share: 0.05\n  share: 0.5\n", "duplicate key 'share'"),
    (b"sources: {}\nsources: {}\n", "duplicate key 'sources'"),
    (b"control:\n  share: .nan\n", ".nan is not a finite number"),
    (b"holdout_share: -.inf\n", "-.inf is not a finite number"),
    # YAML reads \N in double quotes as U+0085: a tester's NULLIF(customer, "\N") took a missing customer as a user
    (b"sources:\n  s: {table: orders, columns: {user_id: \"NULLIF(customer, '\\N')\"}}\n", "control character U+0085"),
    (b"actions:\n  w:\n    description: \"\xff\xfe\"\n", "not UTF-8 text (byte 0xff"),
    (None, "is a folder, not a file"),
    (b"x: !!python/object/apply:os.system [\"true\"]\n", "could not determine a constructor"),
    (b"root:*:20228:0:99999:7:::\n", "not a mapping of the expected keys"),
    (b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n", "not a mapping"),
])
def test_a_file_that_is_not_a_plain_config_is_refused_in_one_line(tmp_path, name, content, words):
    start = time.perf_counter()
    message = refusal(tmp_path, name, content)
    assert words in message, message
    assert "root:" not in message and "daemon" not in message  # never the content of a file that is not a config
    assert time.perf_counter() - start < 5  # the alias bomb is refused before it expands


def test_a_string_where_a_number_is_expected_is_not_infinite(tmp_path):
    assert "cost_per_send" in refusal(tmp_path, "actions.yaml", b"actions:\n  w:\n    cost_per_send: 'inf'\n")


def test_config_and_set_use_the_same_loader(tmp_path):
    config = tmp_path / "settings.yaml"
    for content, words in [(b"ops:\n  segment_model:\n    config: {k_max: 3, k_max: 6}\n", "duplicate key 'k_max'"),
                           (b"ops:\n  churn_model:\n    config: {min_auc: \xff}\n", "not UTF-8 text"),
                           (b"ops: &o {}\nx: *o\n", "anchors and aliases")]:
        config.write_bytes(content)
        with pytest.raises(SettingsError, match=words) as err:
            load_config_file(config)
        assert str(err.value).startswith(f"--config {config}")
    with pytest.raises(SettingsError, match="is a folder"):
        load_config_file(tmp_path)
    with pytest.raises(SettingsError, match="not a finite number"):
        parse_assignment("churn_model.min_auc=.nan")
    assert parse_assignment("churn_model.min_auc=0.6")["ops"]["churn_model"]["config"] == {"min_auc": 0.6}


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_config_path_naming_a_pipe_a_device_or_a_huge_file_is_one_line(tmp_path, monkeypatch, kind):
    """SEG_SOURCES_FILE naming a FIFO waited forever; /dev/zero read until memory ran out."""
    import os

    target = tmp_path / "sources.yaml"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target = tmp_path / "zero.yaml"
        target.symlink_to("/dev/zero")
    else:
        target.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    monkeypatch.setenv("SEG_SOURCES_FILE", str(target))
    start = time.perf_counter()
    with pytest.raises(SourceConfigError) as err:
        load_sources(tmp_path)
    words = "larger than" if kind == "huge" else "not a regular file"
    assert words in str(err.value) and "\n" not in str(err.value) and time.perf_counter() - start < 5


def test_an_unknown_yaml_tag_is_not_quoted_whole(tmp_path):
    """The parser quotes the tag it does not know: a secret written as one was printed."""
    message = refusal(tmp_path, "sources.yaml", b"token: !sk_live_51HSECRETxyz\n")
    assert "could not determine a constructor" in message and "SECRET" not in message


def test_config_from_a_pipe_is_read_and_a_pipe_without_writer_does_not_hang(tmp_path):
    """``--config <(envsubst < settings.yaml)`` is a pipe: read (it was refused as not a regular file once pipes
    were); a named pipe nobody writes to is one line at once, not a wait forever (nor a run on the defaults)."""
    import os
    import threading

    fifo = tmp_path / "settings.yaml"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(SettingsError, match="a pipe nothing was written to"):
        load_config_file(fifo)
    assert time.perf_counter() - start < 5
    writer = threading.Thread(target=lambda: fifo.write_text("ops:\n  churn_model:\n    config:\n      min_auc: 0.6\n"))
    writer.start()  # opening for writing waits for the reader
    time.sleep(0.2)
    assert load_config_file(fifo) == {"ops": {"churn_model": {"config": {"min_auc": 0.6}}}}
    writer.join()


def test_a_run_launched_with_a_value_out_of_range_stops_at_its_first_step_in_one_line(data_dir):
    """The launchpad checks names and types, not a Config class's limits: ``k_min: -3`` ran ingestion and the features,
    then failed segment_model with pydantic's traceback, retried twice. Now the first step refuses it, not retried, and
    the failure sensor names the cause, not the retry policy's "Exceeded max_retries"."""
    import dagster as dg

    from seg_assets.automation.jobs import _cause
    from seg_assets.definitions import build_defs

    job = build_defs(data_dir).resolve_job_def("refresh")
    result = job.execute_in_process(run_config={"ops": {"segment_model": {"config": {"k_min": -3}}}},
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "ingest_landing"
    assert "invalid setting: segment_model.k_min: Input should be greater than or equal to 2" in failure.step_failure_data.error.message
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)
    assert not (data_dir / "warehouse.duckdb").exists() or not result.asset_materializations_for_node("ingest_landing")

    class Error:  # SerializableErrorInfo's shape
        def __init__(self, message, cause=None):
            self.message, self.cause = message, cause

    class Data:  # StepFailureData's
        def __init__(self, error, description=None):
            self.error = error
            self.user_failure_data = None if description is None else type("U", (), {"description": description})()

    assert _cause(Data(Error("Exceeded max_retries of 2\n", Error("OverflowError: too big")))) == "OverflowError: too big"
    # a Failure raised from another error says its own description (the sensor said the cause under it)
    stopped = Data(Error("Failure: interrupted", Error("InterruptException: INTERRUPT Error")), "interrupted (Ctrl-C)")
    assert _cause(stopped) == "interrupted (Ctrl-C)"


@pytest.mark.parametrize("field, value", [("refit_retry_hours", 1e300), ("max_match_distance", -1.0),
                                          ("promotion_tolerance", 5.0), ("sticky_odds", 1e300), ("k_min", 10**12)])
def test_model_settings_that_size_or_sign_something_are_bounded(field, value):
    """``refit_retry_hours=1e300`` overflowed a timedelta mid-run ("unexpected: please report it"); a negative
    ``max_match_distance`` would give every re-fitted segment a new id."""
    import dagster as dg

    from seg_assets.segmentation.assets import SegmentModelConfig

    with pytest.raises(dg.Failure, match=f"invalid setting: {field}: Input should be"):
        SegmentModelConfig(**{field: value})


def test_a_subset_launched_with_a_value_out_of_range_fails_in_one_line_not_retried(data_dir):
    """'Materialize selected' with config skips ingestion's check: segment_model failed with pydantic's traceback,
    retried twice. Every op's Config class now refuses its own values in one line."""
    import dagster as dg

    from seg_assets.definitions import build_defs
    from seg_assets.segmentation.assets import SEGMENT_MODEL

    job = build_defs(data_dir).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(run_config={"ops": {"segment_model": {"config": {"k_min": -3}}}}, asset_selection=[SEGMENT_MODEL],
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_failure_data.user_failure_data.description == (
        "invalid setting: k_min: Input should be greater than or equal to 2")
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


@pytest.mark.parametrize("name, content, said", [
    ("sources.yaml", "sources:\n  crm:\n    table: customers\n    timestamp_fromat: '%d.%m.%Y'\n",
     "sources.crm.timestamp_fromat: unknown key; did you mean 'timestamp_format'? the keys here are table, folder, csv"),
    ("sources.yaml", "sources:\n  shop:\n    table: order_items\n    csv: {encodng: cp1252}\n",
     "sources.shop.csv.encodng: unknown key; did you mean 'encoding'? the keys here are delimiter, encoding"),
    ("actions.yaml", "actions:\n  winback:\n    descripton: a coupon\n",
     "actions.winback.descripton: unknown key; did you mean 'description'?"),
    ("sources.yaml", "sources:\n  crm:\n    tabel: customers\n",  # a required key misspelt: not "Field required"
     "sources.crm.tabel: unknown key; did you mean 'table'?"),
])
def test_a_misspelt_key_is_named_with_the_likeliest_key_and_the_keys_of_its_level(tmp_path, name, content, said):
    """`timestamp_fromat:` got pydantic's "Extra inputs are not permitted", naming no key (a tester's)."""
    (tmp_path / name).write_text(content)
    with pytest.raises((SourceConfigError, ActionsConfigError)) as err:
        load_sources(tmp_path) if name == "sources.yaml" else load_catalogue(tmp_path)
    assert said in str(err.value), str(err.value)
