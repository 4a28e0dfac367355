"""A benchmark's children end with it (`benchmarks.runs.call`)."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from absl.testing import absltest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A benchmark stand-in: starts a child through `runs.call` that writes its pid
# and would sleep for ten minutes, ending gracefully on SIGTERM.
_PARENT = textwrap.dedent('''
    import sys
    from benchmarks import runs
    child = (
        "import os, signal, sys, time\\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\\n"
        "time.sleep(600)\\n")
    runs.call([sys.executable, '-c', child, sys.argv[1]], check=True)
''')


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


class CallTest(absltest.TestCase):

  def _wait_for(self, path: str, seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
      if os.path.exists(path) and open(path).read():
        return int(open(path).read())
      time.sleep(0.05)
    self.fail(f'the child never wrote {path}')

  def test_sigterm_to_the_benchmark_ends_its_child(self):
    for signum in (signal.SIGTERM, signal.SIGHUP):
      with self.subTest(signal=signum.name), tempfile.TemporaryDirectory() as tmp:
        pid_file = os.path.join(tmp, 'child.pid')
        parent = subprocess.Popen([sys.executable, '-c', _PARENT, pid_file], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
          child = self._wait_for(pid_file)
          self.assertTrue(_alive(child))
          parent.send_signal(signum)
          parent.wait(30)
          self.assertEqual(parent.returncode, 128 + signum)
          # The child got SIGTERM (its handler exits) and was reaped by the parent.
          self.assertFalse(_alive(child))
        finally:
          parent.kill()
          parent.wait()

  def test_timeout_ends_the_child(self):
    from benchmarks import runs  # pylint: disable=g-import-not-at-top
    start = time.monotonic()
    with self.assertRaises(subprocess.TimeoutExpired):
      runs.call([sys.executable, '-c', 'import time; time.sleep(600)'], timeout=1)
    self.assertLess(time.monotonic() - start, 30)
    self.assertEmpty(runs._LIVE)  # pylint: disable=protected-access

  def test_check_and_capture(self):
    from benchmarks import runs  # pylint: disable=g-import-not-at-top
    done = runs.call([sys.executable, '-c', 'print("out")'], capture_output=True, text=True)
    self.assertEqual((done.returncode, done.stdout), (0, 'out\n'))
    with self.assertRaises(subprocess.CalledProcessError):
      runs.call([sys.executable, '-c', 'raise SystemExit(3)'], check=True)


if __name__ == '__main__':
  absltest.main()
