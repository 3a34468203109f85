# churn: THREADS workers, each: connect, read the greeting, hold HOLD s, close;
# paced to RATE connects/s in all, for SECONDS.  Prints: done failures peak_concurrency
import socket, sys, threading, time
port, rate, seconds, threads, hold = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
lock = threading.Lock(); live = [0]; peak = [0]; done = [0]; failed = [0]
start = time.time(); end = start + seconds
slot = [0]
def work():
    while True:
        with lock:
            k = slot[0]; slot[0] += 1
        due = start + k / rate
        if due >= end or time.time() >= end: return
        d = due - time.time()
        if d > 0: time.sleep(d)
        s = socket.socket()
        try:
            s.connect(('127.0.0.1', port)); s.recv(8)
            with lock:
                live[0] += 1; peak[0] = max(peak[0], live[0])
            if hold: time.sleep(hold)
            with lock: live[0] -= 1
        except OSError:
            with lock: failed[0] += 1
        s.close()
        with lock: done[0] += 1
ts = [threading.Thread(target=work) for _ in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(done[0], failed[0], peak[0], round(done[0] / (time.time() - start)))
