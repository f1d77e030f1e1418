"""Statement text for the duplicate and contamination checks: normalization, names folded, n-grams."""

from nous_ray.prepare.text import fingerprint, jaccard, ngrams, normalize_statement, words


def test_normalize_statement_folds_whitespace_case_and_width():
    assert normalize_statement("  Print\r\n the  SUM.\t") == "print the sum."
    # NFKC: full-width letters and digits are the ASCII ones.
    assert normalize_statement("Ｐｒｉｎｔ １２") == "print 12"


def test_words_fold_names_and_variables_but_not_sentence_starts():
    assert words("Alice gives Bob 3 apples. Then Bob eats x_1 and A_i.") == [
        "alice", "gives", "<name>", "3", "apples", "then", "<name>", "eats", "<var>", "and", "<var>"]
    # Renaming characters and variables inside sentences changes nothing.
    assert words("Help Alice: count n.") == words("Help Carol: count m.")
    # Typesetting does not matter: LaTeX commands and symbols fall away.
    assert words("1 \\le n \\le 10^5") == words("1 <= n <= 10^5") == words("1 ≤ n ≤ 10^5")
    assert words("1 \\le n \\le 10^5") == ["1", "<var>", "10", "5"]
    # Upper-case words are not names (YES / NO answers).
    assert words("print YES or NO") == ["print", "yes", "or", "no"]


def test_ngrams_and_jaccard():
    assert ngrams(["a", "b", "c", "d"], 2) == {"a b", "b c", "c d"}
    assert ngrams(["a", "b"], 3) == {"a b"}  # shorter than n: one gram of all words
    assert ngrams([], 3) == set()
    assert jaccard({"x", "y"}, {"y", "z"}) == 1 / 3
    assert jaccard(set(), set()) == 0.0


def test_fingerprint_ignores_key_order_only():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
