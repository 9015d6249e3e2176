"""Command lines and files a new user might try: each ends in one paragraph and README's exit code, with no traceback
and no folder left behind."""

import re

import pytest

from diagnose.cli.commands import main

# command line -> what its one paragraph must say; each is refused before Hydra makes a folder, with exit code 2
REFUSED = {
    "a sweep nested in a list": (["train", "-m", "seed=range(0,2),1"], r"Hydra cannot expand this sweep"),
    "one seed written two ways": (["train", "-m", "seed=0,00"], r"lists 0 and 00, one value: those jobs would be"),
    "one lr written two ways": (["train", "-m", "lr=0.1,1e-1"], r"lists 0.1 more than once"),
    "a group deleted": (["train", "~norm"], r"cannot delete 'norm'.*pick another option \(norm=<option>\)"),
    "the data deleted": (["train", "~data"], r"cannot delete 'data'.*Settings: batch"),
    "a nested key deleted": (["train", "~model.depth"], r"cannot delete 'model.depth'.*\(model.depth=<value>\)"),
    "a key without a value": (["train", "batch"], r"'batch' has no value.*Settings: batch, device"),
    "an unbalanced parenthesis": (["train", "lr=0.1)"], r"grammar cannot read this \(extraneous input.*Settings:"),
    "an open bracket": (["probe", "batch=["], r"batch=\[: Hydra's override grammar cannot read this.*probe --help"),
    "a seed beyond 64 bits": (["train", "seed=9223372036854775808"], r"seed must be a whole number in \[0, "),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_hostile_command_line_is_one_paragraph_exit_2_and_no_folder(case, tmp_path, monkeypatch, capsys):
    args, message = REFUSED[case]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(args)
    said = capsys.readouterr()
    assert stop.value.code == 2, said
    assert said.err.startswith("Error: ") and said.err.count("\n") == 1, said.err  # one paragraph
    assert re.search(message, said.err), said.err
    assert "Traceback" not in said.out + said.err and not list(tmp_path.iterdir())
