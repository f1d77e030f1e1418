from nous_ray.verify.extract import extract_code


def test_last_python_block_wins():
    text = "think\n```python\nprint(1)\n```\nmore\n```py\nprint(2)\n```\nbye"
    assert extract_code(text) == "print(2)\n"


def test_accepted_tags_and_bare_fence():
    for tag in ("python", "py", "Python3", "PYTHON", "python3", ""):
        assert extract_code(f"```{tag}\nx = 1\n```") == "x = 1\n", tag


def test_other_languages_skipped():
    text = "```python\nprint('py')\n```\n```cpp\nint main(){}\n```"
    assert extract_code(text) == "print('py')\n"


def test_no_code_cases():
    assert extract_code("no fences at all") is None
    assert extract_code("```python\nprint(1)\n") is None  # unclosed (truncated answer)
    assert extract_code("```python\n   \n```") is None  # blank block
    assert extract_code("text ```python\nprint(1)\n```") is None  # fence not at line start
    assert extract_code(None) is None


def test_crlf_and_indented_content_kept():
    text = "```python\r\ndef f():\r\n    return 1\r\n```\r\n"
    assert extract_code(text) == "def f():\r\n    return 1\r\n"


def test_fences_indented_up_to_three_spaces():
    text = "Answer:\n  ```python\n  def f():\n      return 1\n  print(f())\n  ```\n"
    assert extract_code(text) == "def f():\n    return 1\nprint(f())\n"  # the fence's indentation removed
    assert extract_code("   ```py\nprint(1)\n```") == "print(1)\n"  # lines with less indentation keep theirs
    assert extract_code("```python\nprint(1)\n   ```") == "print(1)\n"  # an indented closing fence
    assert extract_code("    ```python\nprint(1)\n    ```") is None  # four spaces: code, not a fence
