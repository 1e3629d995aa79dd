# CPython's refcount of None under four threads (fast_test.go): every
# "y = x" and list of Nones takes and drops references to it.
import sys
import threading
# No switch forced by time: a slower run (under memtrap) would make more,
# each with refcount writes of its own.
sys.setswitchinterval(1000)
def work(n):
    x = None
    for i in range(n):
        y = x
        z = [None, None]
threads = [threading.Thread(target=work, args=(20000,)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("done")
