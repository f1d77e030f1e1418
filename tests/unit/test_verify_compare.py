import tracemalloc

from nous_ray.verify.compare import LENGTH_FACTOR, LENGTH_SLACK, read_cap, stdout_matches, values_match


def test_exact_and_whitespace():
    assert stdout_matches("3\n", "3")
    assert stdout_matches("  1 2 3   \n4\n\n", "1 2 3\n4")
    assert stdout_matches("a\r\nb\r\n", "a\nb\n")


def test_words_must_match_exactly():
    assert not stdout_matches("NO", "YES")
    assert not stdout_matches("yes", "YES")
    assert not stdout_matches("1 2", "1  2 3")


def test_line_counts_must_match():
    assert not stdout_matches("1\n2", "1 2")
    assert not stdout_matches("1\n\n2", "1\n2")


def test_decimals_exact_not_tolerant():
    assert stdout_matches("1.0", "1")  # same decimal value (LiveCodeBench)
    assert stdout_matches("1e3 2.50", "1000 2.5")
    assert not stdout_matches("0.333333", "0.3333333")  # within 1e-5 relative: still wrong
    assert not stdout_matches("50000000000000001", "50000000000000000")
    assert stdout_matches("nan", "nan ")  # identical text is equal whatever it says
    assert not stdout_matches("NaN 1", "nan 1")  # NaN is not a number to compare
    assert not stdout_matches("1_0", "10")


def test_values_are_plain_json():
    assert values_match([1, 2, [3]], [1, 2, [3]])
    assert values_match(2.0, 2)  # Python equality, as LiveCodeBench
    assert not values_match([1, 2], [2, 1])
    assert not values_match("1", 1)


def test_decimal_path_needs_every_token_to_be_a_number():
    assert not stdout_matches("YES 1.0", "YES 1")  # LiveCodeBench: "YES" is no Decimal, the line differs
    assert stdout_matches("1.0 2", "1 2.00")
    assert not stdout_matches("1 2", "1 2 3") and not stdout_matches("1 2 3", "1 2")


def test_long_lines_compare_in_little_memory():
    n = 1 << 15
    expected = " ".join(["7"] * n)  # 64 KiB, one line
    got = " ".join(["7.0"] * n)  # equal as decimals, so every token is compared
    tracemalloc.start()
    try:
        assert stdout_matches(got, expected)
        assert not stdout_matches(got + " 7", expected)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Token lists would hold 32k strings per side (~2 MB); the copies of the two lines are all.
    assert peak < 3 * (len(got) + len(expected)), peak


def test_read_cap_bounds_the_judges_work():
    assert read_cap("3") == LENGTH_FACTOR + LENGTH_SLACK
    assert read_cap("é" * 10) == LENGTH_FACTOR * 20 + LENGTH_SLACK  # bytes, not characters


def test_values_too_deep_to_compare_are_not_equal():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    deep2 = []
    for _ in range(100_000):
        deep2 = [deep2]
    assert not values_match(deep, deep2)
