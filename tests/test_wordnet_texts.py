"""scripts/wordnet_texts.py: WordNet's glosses as broad text for the embedding distillation."""

from __future__ import annotations

from loaders import load_script

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
DATA = {
    "noun": "01234567 03 n 02 mitosis 0 cell_division 0 000 | cell division in which the nucleus divides  \n",
    "verb": "00001740 29 v 01 breathe 0 001 @ 00002084 v 0000 | draw air into, and expel out of, the lungs  \n",
    "adj": "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance  \n",
    "adv": "00001740 02 r 01 barely 0 000 | only just  \n",
}


def test_each_synset_gives_its_lemmas_and_gloss_shuffled_and_counted(tmp_path):
    script = load_script("wordnet_texts")
    for pos, line in DATA.items():
        (tmp_path / f"data.{pos}").write_text(HEADER + line, encoding="latin-1")
    expected = {
        "mitosis, cell division: cell division in which the nucleus divides",
        "breathe: draw air into, and expel out of, the lungs",
        "abounding, galore: existing in abundance",
        "barely: only just",
    }
    assert set(script.wordnet_texts(tmp_path, seed=1)) == expected
    assert script.wordnet_texts(tmp_path, seed=1) == script.wordnet_texts(tmp_path, seed=1)
    output = tmp_path / "out" / "texts.txt"
    assert script.main(["--wordnet", str(tmp_path), "--output", str(output), "--count", "3", "--seed", "1"]) == 0
    assert output.read_text().splitlines() == script.wordnet_texts(tmp_path, seed=1)[:3]


def test_a_folder_without_wordnet_gets_a_one_line_error(tmp_path, capsys):
    script = load_script("wordnet_texts")
    assert script.main(["--wordnet", str(tmp_path), "--output", str(tmp_path / "texts.txt")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path} has no WordNet data.noun: install Debian's wordnet-base or pass --wordnet FOLDER\n"
    )
    assert not (tmp_path / "texts.txt").exists()
