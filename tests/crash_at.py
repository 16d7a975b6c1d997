"""Runs a training tool and SIGKILLs it at one point of its Nth checkpoint save, as a
power cut or an out-of-memory kill would (tests/test_crash_safety.py):

    python tests/crash_at.py POINT N TOOL.py [tool arguments...]

POINT is ``write`` (half of the checkpoint's bytes are on disk), ``rename`` (the file
is complete under its temporary name) or ``pointer`` (the checkpoint has its final name,
``last_checkpoint`` is not updated yet).
"""
import os
import runpy
import signal
import sys


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    point, save_number, tool, *tool_args = sys.argv[1:]
    save_number = int(save_number)
    saves = 0

    from mmengine.fileio.backends import LocalBackend
    put = LocalBackend.put

    def counting_put(self, obj, filepath):
        nonlocal saves
        if '.pth' not in os.path.basename(str(filepath)):
            return put(self, obj, filepath)
        saves += 1
        if point == 'write' and saves == save_number:
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()
        return put(self, obj, filepath)

    LocalBackend.put = counting_put
    replace = os.replace

    def dying_replace(src, dst):
        if saves == save_number and (
                (point == 'rename' and str(dst).endswith('.pth'))
                or (point == 'pointer' and str(dst).endswith('last_checkpoint'))):
            die()
        return replace(src, dst)

    os.replace = dying_replace
    sys.argv = [tool, *tool_args]
    runpy.run_path(tool, run_name='__main__')


if __name__ == '__main__':
    main()
