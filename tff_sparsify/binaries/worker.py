r"""A TFF worker for remote coordinators, behind mutual TLS.

On each worker host (see README, "Several hosts"):

  tff-sparsify-worker --make_credentials=creds --hosts=10.0.0.2,10.0.0.3
  # copy creds/worker-10.0.0.2/ to 10.0.0.2 only (and so on), and
  # creds/coordinator/ to the coordinator
  tff-sparsify-worker --host=10.0.0.2 --port=8000 --credentials=worker-10.0.0.2 \
    --client_data=sqlite:/srv/silo.sqlite --log_file=/var/log/tff-worker.log

and on the coordinator:

  python -m binaries.train --workers=10.0.0.2:8000,10.0.0.3:8000 \
    --worker_credentials=creds/coordinator ...

The worker accepts only TLS connections whose client certificate the CA
signed; TFF's `worker_binary` itself runs in a private network namespace, so
nothing reaches it but this relay. It serves until SIGINT or SIGTERM.
"""

import os
import sys

from absl import flags

from tff_sparsify.binaries import flag_utils
from tff_sparsify.simulation import worker_processes as worker_lib

_HOST = flags.DEFINE_string(
    'host', '127.0.0.1',
    'Address to listen on (0.0.0.0: every interface of this host).')
_PORT = flags.DEFINE_integer('port', None, 'TCP port to listen on.',
                             lower_bound=1, upper_bound=65535)
_CREDENTIALS = flags.DEFINE_string(
    'credentials', None,
    'Directory holding ca.pem, worker.pem and worker.key.')
_LOG_FILE = flags.DEFINE_string(
    'log_file', None, "File for worker_binary's output (default: discarded).")
_ALLOW_UNISOLATED = flags.DEFINE_bool(
    'allow_unisolated', False,
    'Where no private network namespace can be made, run worker_binary '
    'anyway, bound to loopback only (a preloaded bind, built with cc): '
    'other local users of this host can then reach it, unauthenticated.')
_CLIENT_DATA = flags.DEFINE_string(
    'client_data', None,
    'This silo\'s client data, served by client id and never sent: '
    'sqlite:PATH (TFF\'s SqlClientData layout) or tfrecord_dir:DIR (one '
    '<client id>.tfrecord per client). The coordinator reads only the list '
    'of client ids, their example counts and the element spec.')
_USER = flags.DEFINE_string(
    'user', None,
    'Drop to this user after binding the port and reading the key: the graphs '
    'the coordinator sends then run with its rights only (e.g. a user made '
    'for the worker, who can read the client data and nothing else of note).')
_MAKE_CREDENTIALS = flags.DEFINE_string(
    'make_credentials', None,
    'Write a new CA, a worker certificate for --hosts and a coordinator '
    'certificate to this directory, then exit.')
_HOSTS = flags.DEFINE_list(
    'hosts', [],
    'With --make_credentials: the worker hosts\' names or IP addresses, as '
    'the coordinator will name them in --workers.')


def main(argv):
  if len(argv) > 1:
    flag_utils.fail_with(
        f'{flag_utils.program_name()}: error: unexpected arguments: '
        f'{" ".join(argv[1:])}')
  if _MAKE_CREDENTIALS.value is not None:
    _make_credentials()
    return
  if _PORT.value is None:
    flag_utils.fail(_PORT, 'must be set: the TCP port to serve on')
  if _CREDENTIALS.value is None:
    flag_utils.fail(_CREDENTIALS, 'must be set: a worker is served only over '
                    'mutual TLS (make the files with --make_credentials)')
  try:
    for warning in worker_lib.check_credentials(
        _CREDENTIALS.value, worker_lib.SERVER_CERT, worker_lib.SERVER_KEY,
        forbidden=(worker_lib.CLIENT_KEY,)):
      print(f'{flag_utils.program_name()}: warning: {warning}', file=sys.stderr, flush=True)
  except worker_lib.CredentialsError as e:
    flag_utils.fail(_CREDENTIALS, str(e))
  if _USER.value is not None:
    import pwd  # pylint: disable=g-import-not-at-top
    try:
      pwd.getpwnam(_USER.value)
    except KeyError:
      flag_utils.fail(_USER, 'no such user')
    if os.getuid() != 0:
      flag_utils.fail(_USER, 'needs the worker to start as root (it drops to the user after '
                      'binding)')
  if _LOG_FILE.value and not os.path.isdir(
      os.path.dirname(os.path.abspath(_LOG_FILE.value))):
    flag_utils.fail(_LOG_FILE, 'its directory does not exist')
  try:
    tls = worker_lib.server_tls_context(_CREDENTIALS.value)
  except (OSError, ValueError) as e:
    flag_utils.fail(_CREDENTIALS, f'unreadable TLS files: {e}')
  silo_dir = None
  if _CLIENT_DATA.value:
    from tff_sparsify.simulation import silo  # pylint: disable=g-import-not-at-top
    try:
      silo_dir = silo.prepare(_CLIENT_DATA.value)
    except (ValueError, OSError) as e:
      flag_utils.fail(_CLIENT_DATA, str(e))
  try:
    sys.exit(_serve(tls, silo_dir))
  finally:
    if silo_dir:
      silo.remove(silo_dir)


def _make_credentials():
  """`--make_credentials`: the files of a new mutual-TLS federation, and where they went."""
  if not _HOSTS.value:
    flag_utils.fail(_HOSTS, 'must name the worker hosts with --make_credentials')
  try:
    worker_lib.make_credentials(_MAKE_CREDENTIALS.value, _HOSTS.value)
  except FileExistsError:
    flag_utils.fail(_MAKE_CREDENTIALS, 'exists: credentials go to a new directory only '
                    '(one made by someone else could be read or swapped)')
  except OSError as e:
    flag_utils.fail(_MAKE_CREDENTIALS, f'cannot be written: {e.strerror}')
  directory = _MAKE_CREDENTIALS.value
  print(f'wrote {directory}/{worker_lib.COORDINATOR_DIR}/ (the coordinator\'s: '
        f'--worker_credentials) and, for each worker host, '
        + ', '.join(f'{directory}/{worker_lib.worker_dir(h)}/' for h in _HOSTS.value)
        + ' (its --credentials); copy each to its host only')


def _serve(tls, silo_dir) -> int:
  """Listens, serves until a signal or the worker's exit; the exit code."""
  try:
    listener = worker_lib.tcp_listener(_HOST.value, _PORT.value)
  except OSError as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: cannot listen '
                         f'on {_HOST.value}:{_PORT.value}: {e.strerror}', code=1)
  try:
    return worker_lib.serve(listener, isolate=not _ALLOW_UNISOLATED.value,
                            tls=tls, log_path=_LOG_FILE.value,
                            ready_fd=sys.stdout, silo_dir=silo_dir, user=_USER.value)
  except worker_lib.IsolationError as e:
    flag_utils.fail_with(
        f'{flag_utils.program_name()}: error: {e.strerror}; pass '
        '--allow_unisolated to serve anyway (worker_binary then listens on '
        'this host\'s loopback, unauthenticated: other local users can reach it)',
        code=1)
  except RuntimeError as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}', code=1)


def run():
  flag_utils.run_main(main)


if __name__ == '__main__':
  run()
