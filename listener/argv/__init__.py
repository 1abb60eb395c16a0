"""The docker CLI's argv, parsed the way the docker CLI parses it.

auditd records the argv of every docker CLI call (the EXECVE record). This
module turns it into what correlation and the rules need: the subcommand, its
targets (container names or ids, image references), `--name`, and for
`run`/`create` the security-relevant settings as a `ContainerConfig` with
`origin="argv"`.

Parsing follows spf13/pflag, which the docker CLI uses:

* `--flag=value` and `--flag value`; a flag that takes a value takes the next
  word whatever it looks like (`-e -x` sets the variable `-x`);
* short flags combine (`-itd`); the first one that takes a value takes the rest
  of the word (`-p8080:80`, `-itv/a:/b`) or the next word; `-d=false` works;
* boolean flags accept `--rm=false`;
* `--` ends the flags, and a lone `-` is a word (`docker import - ref`);
* `docker` itself, `run`, `create` and `exec` stop at the first word that is
  not a flag (everything after the image is the container's command); other
  commands accept flags after their arguments (`docker rm web-1 -f`).

So the parser must know which flags take a value: the tables below list them
per command (docker CLI 20.10 to 28). A flag we do not know makes the docker
CLI fail before it talks to the Engine; it is recorded in `errors` and parsed
as a boolean.
"""

from listener.argv.calls import ComposeCall, DockerCall, program_argv
from listener.argv.options import ExecOptions, container_config, exec_options, parse_memory
from listener.argv.parsing import parse_docker_argv
from listener.model.imageref import normalize_image_ref

__all__ = [
    "ComposeCall",
    "DockerCall",
    "ExecOptions",
    "container_config",
    "exec_options",
    "normalize_image_ref",
    "parse_docker_argv",
    "parse_memory",
    "program_argv",
]
