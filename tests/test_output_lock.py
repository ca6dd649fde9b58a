"""One writer per output folder (brgm_pyro.output_lock): other processes hold the folder for real, a killed holder
frees it at once, the last of a run's processes removes the lock file, and a folder that cannot be written is
refused in one sentence (as root too: /sys and a read-only mount refuse root, chmod does not)."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from brgm_pyro.errors import InputError
from brgm_pyro.output_lock import LOCK_NAME, OutputInUseError, check_writable, claim_output, join_output


def _kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_second_run_is_refused_naming_the_folder_and_the_other_run_until_that_run_is_killed(tmp_path, holders):
    out = tmp_path / "out"
    holder = holders(out)
    with pytest.raises(OutputInUseError) as refused:
        claim_output(out, "evaluate")
    message = str(refused.value)
    assert message.startswith(f"The output folder {out} is in use by another run (sample, pid {holder.pid} on ")
    assert message.endswith("; wait for it to end or stop it, or choose another --out.")
    _kill(holder)  # kill -9: the kernel drops its lock, the file stays behind
    assert (out / LOCK_NAME).exists()
    with claim_output(out, "evaluate"):
        with pytest.raises(OutputInUseError, match=r"in use by another run \(evaluate, pid "):
            claim_output(out, "sample")
    assert not (out / LOCK_NAME).exists()  # the last holder removes it
    assert list(out.iterdir()) == []


def test_every_process_of_a_run_holds_the_folder_until_the_last_one_ends(tmp_path, holders):
    """The ranks of a torchrun job: rank 0 claims, the others join; while any of them lives, the folder is taken."""
    out = tmp_path / "out"
    first = holders(out, "claim")
    other = holders(out, "join")
    _kill(first)
    with pytest.raises(OutputInUseError, match=f"pid {first.pid} "):  # the claimer's record stays in the file
        claim_output(out, "sample")
    _kill(other)
    claim_output(out, "sample").release()


def test_joining_a_folder_nobody_claimed_or_one_that_another_run_is_claiming(tmp_path):
    with pytest.raises(InputError, match="Cannot write into the output folder"):
        join_output(tmp_path / "never-claimed")
    with claim_output(tmp_path, "sample"), join_output(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("where", ["/sys/kernel", "/sys/kernel/brgm-out"])
def test_a_folder_no_one_may_write_is_refused_in_one_sentence(where):
    """sysfs refuses to create files and folders even for root, so this holds whoever runs the tests."""
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no /sys/kernel on this system")
    for check in (lambda: claim_output(where, "sample"), lambda: check_writable(where)):
        with pytest.raises(InputError, match=rf"^Cannot write into the output folder {where} \(.+\); choose another "
                                             r"--out\.$"):
            check()


def test_a_file_in_the_folders_path_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "file").write_text("a user's file")
    for where in (tmp_path / "file", tmp_path / "file" / "out"):
        with pytest.raises(InputError, match=r"\(a file stands in its path\); choose another --out\.$"):
            claim_output(where, "sample")
    assert (tmp_path / "file").read_text() == "a user's file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 555; /sys and a read-only mount "
                                              "are the tests that hold for root")
def test_a_read_only_folder_is_refused_in_one_sentence(tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    with pytest.raises(InputError, match=r"\(permission denied\); choose another --out\.$"):
        claim_output(out, "sample")


def test_a_read_only_file_system_is_refused_in_one_sentence(tmp_path):
    """A read-only tmpfs mounted in a mount namespace of its own (unshare): read-only for root too."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a mount namespace here (unshare -m needs root or user namespaces)")
    mount = tmp_path / "mnt"
    mount.mkdir()
    code = (
        "import sys\n"
        "from brgm_pyro.output_lock import check_writable, claim_output\n"
        "for check in (lambda: claim_output(sys.argv[1], 'sample'), lambda: check_writable(sys.argv[1])):\n"
        "    try:\n"
        "        check()\n"
        "    except ValueError as err:\n"
        "        print(err)\n"
    )
    script = f'mount -t tmpfs -o ro tmpfs "$1" && exec "{sys.executable}" -c "$2" "$1/out"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(mount), code], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = f"Cannot write into the output folder {mount}/out (read-only file system); choose another --out.\n"
    assert done.stdout == expected * 2
