"""A child process's own peak RSS, for benchmarks that run a command in a fresh interpreter.

`HWM` is source to put before the child's code: it defines `hwm()`, the process's VmHWM in MB.
Not ru_maxrss: Linux keeps the larger of the parent's peak and the child's across the fork and
exec that start a child, so a child started by a benchmark that had loaded data reported the
benchmark's size, not its own.
"""

HWM = "hwm = lambda: int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024\n"
