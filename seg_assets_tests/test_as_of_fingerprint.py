"""The "Segments are current" fingerprint counts an as-of as the instant it names (h3, session 32)."""

from seg_assets.publish.state import settings_fingerprint


def test_one_as_of_instant_written_three_ways_is_one_setting():
    forms = ["2026-10-31T23:59:37Z", "2026-10-31T23:59:37+00:00", "2026-10-31 23:59:37", "2026-11-01T01:59:37+02:00"]
    assert len({settings_fingerprint({}, f) for f in forms}) == 1
    assert settings_fingerprint({}, "2026-10-31T23:59:38Z") != settings_fingerprint({}, forms[0])
    assert settings_fingerprint({}, None) != settings_fingerprint({}, forms[0])
