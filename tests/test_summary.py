"""The run summary's last line lists the run folder's outputs that exist, not a fixed list (logger=csv writes no
wandb/, logger=none no csv/metrics.csv)."""

from lra_bench.training.summary import folder_contents, print_summary


def test_folder_line_names_only_what_exists(tmp_path, capsys):
    (tmp_path / "result.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    assert folder_contents(tmp_path) == ["result.json", "checkpoints/"]
    print_summary({"task": "listops"}, tmp_path)
    out = capsys.readouterr().out
    assert "(result.json, checkpoints/)" in out
    assert "csv/metrics.csv" not in out and "wandb/" not in out
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step\n")
    (tmp_path / "wandb").mkdir()
    assert folder_contents(tmp_path) == ["result.json", "checkpoints/", "csv/metrics.csv", "wandb/"]
