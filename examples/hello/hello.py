"""The demo function for `lamina run`: reports what the execution environment looks like."""
import os
import socket

def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e.strerror}>"

status = dict(l.split(":\t", 1) for l in read("/proc/self/status").splitlines() if ":\t" in l)
print(f"Hello, {os.environ.get('NAME', 'world')}! from an execution environment")
print(f"  uid/gid          {os.getuid()}/{os.getgid()} ({os.environ.get('USER') or 'sbx_user1051'})")
print(f"  hostname         {socket.gethostname()}")
print(f"  cwd              {os.getcwd()} -> {sorted(os.listdir('.'))}")
print(f"  pid              {os.getpid()} (processes visible: {len([p for p in os.listdir('/proc') if p.isdigit()])})")
print(f"  capabilities     {status['CapEff'].strip()}  no_new_privs={status['NoNewPrivs'].strip()}  seccomp={status['Seccomp'].strip()}")
print(f"  network          {sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else read('/proc/net/dev').splitlines()[2].split(':')[0].strip()}")
st = os.statvfs("/tmp")
print(f"  /tmp size        {st.f_blocks * st.f_frsize // (1 << 20)} MB")
try:
    open("/var/task/x", "w")
    print("  /var/task        writable?!")
except OSError as e:
    print(f"  /var/task        read-only ({e.strerror})")
