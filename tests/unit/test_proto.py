"""proto/ is generated from thaw_core.schema; a stale proto/ fails CI."""

from pathlib import Path

from thaw_core import proto, schema

ROOT = Path(__file__).resolve().parents[2]


def test_committed_proto_is_current() -> None:
    assert proto.stale(ROOT / "proto") == [], "proto/ is stale: run `make proto`"


def test_check_notices_a_changed_and_an_extra_file(tmp_path: Path) -> None:
    proto.write(tmp_path)
    assert proto.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "schemas" / "health.json").write_text("{}\n")
    (tmp_path / "schemas" / "gone.json").write_text("{}\n")
    assert proto.stale(tmp_path) == ["schemas/gone.json", "schemas/health.json"]
    assert proto.main(["--check", str(tmp_path)]) == 1


def test_every_wire_type_has_a_schema_and_every_subject_is_listed() -> None:
    files = proto.render()
    for t in schema.WIRE_TYPES:
        assert f"schemas/{t.__struct_config__.tag}.json" in files
    listed = {t for _, payloads in schema.SUBJECTS.values() for t in payloads}
    assert listed <= set(schema.WIRE_TYPES)
