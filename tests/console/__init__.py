"""Browser tests of the web console: Debian's chromium driven by selenium, against a real
local cluster (etcd + MariaDB) and the service in-process."""
