"""zipdir.py OUT_ZIP DIR: zips DIR's contents (paths relative to DIR, modes kept, sorted, fixed
timestamps so the same tree gives the same ZIP)."""
import os
import sys
import zipfile

out, root = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            info = zipfile.ZipInfo(os.path.relpath(p, root), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (os.stat(p).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(p, "rb") as f:
                z.writestr(info, f.read())
