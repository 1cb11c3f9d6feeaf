from clear_middleware.cli import main


def test_frontier_prints_a_table_with_attribution(capsys):
    assert main(["frontier", "--model", "qwen3-1.7b", "--budgets", "1024", "--no-oracle"]) == 0
    out = capsys.readouterr().out
    assert "qwen3-1.7b (1140 runs)" in out
    assert "clear (true curves)" in out and "oracle" not in out.split("\n")[3]
    assert "CC-BY-4.0" in out
