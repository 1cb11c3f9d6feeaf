"""Which cells and rows the traffic-stream benchmark's closer looks pick from the report."""

from benchmarks.traffic_streams import closer_look_cells, closer_look_mix_rows

REPORT = """# Benchmarks

<!-- BEGIN traffic-streams -->
## Estimators on traffic streams

### Cold start, balanced stream

| model | tokens/item | uniform | learned/true kind | learned/true kind, expected |
|---|---|---|---|---|
| m1 | 512 | 0.000 | 1.100 | 1.200 |
| m1 | 4096 | 0.270 | 0.990 | 0.936 |
| m2 | 2048 | 0.120 | 0.960 | 0.970 |

### Robustness

| model | uniform | learned/true kind, expected |
|---|---|---|
| m1 | 0.1 | 0.100 |
<!-- END traffic-streams -->

<!-- BEGIN traffic-streams-mixes -->
### Mixes and arrivals, every model (2048 tokens/item)

| model | mix | arrivals | learned/true kind | learned/true kind, expected | expected, per stream |
|---|---|---|---|---|---|
| m1 | hard-heavy | fixed | 0.915 | 0.918 | 0.849 / 0.956 |
| m1 | balanced | burst | 0.990 | 0.969 | 0.95 / 0.99 |
| m2 | easy-heavy | fixed | 0.900 | 1.046 | 1.0 / 1.1 |
<!-- END traffic-streams-mixes -->
"""


def test_cold_start_cells_below_the_threshold_by_their_expected_ratio():
    # 0.970 is not below 0.97; the robustness table after the cold start is not read.
    assert closer_look_cells(REPORT) == [("m1", 4096)]


def test_mix_rows_below_the_threshold_by_their_expected_ratio():
    # The realised ratio (0.900) does not pick a row; the expected one (1.046) decides.
    assert closer_look_mix_rows(REPORT) == [("m1", "hard-heavy", "fixed"),
                                            ("m1", "balanced", "burst")]
