"""smtpcore.endpoints: splitting and checking endpoints as Postfix does."""

import socket
import unittest

from smtpcore import endpoints
from smtpcore.endpoints import EndpointError, host_port


class HostPortTest(unittest.TestCase):
    def test_server_forms(self):
        good = {"127.0.0.1:25": ("127.0.0.1", "25"), ":25": ("", "25"), "25": ("", "25"),
                "smtp": ("", "smtp"), "[127.0.0.1]:25": ("127.0.0.1", "25"),
                "[::1]:25": ("::1", "25"), "::1:25": ("::1", "25"),
                "[ipv6:::1]:25": ("::1", "25"), "localhost:99999": ("localhost", "99999"),
                "a_b.example:1": ("a_b.example", "1")}
        for text, split in good.items():
            self.assertEqual(host_port(text, "", None), split, text)
        bad = {"127.0.0.1": "garbage after numerical service",
               "127.0.0.1:5x": "garbage after numerical service",
               "[127.0.0.1]": "missing service information",
               "x:": "missing service information", "": "missing service information",
               "foo:bar:25": "valid hostname or network address required",
               "[]:25": "valid hostname or network address required",
               "[x": 'missing "]"', "[x]y": 'garbage after "]"',
               "[ipv6:zz]:1": "malformed IPv6 address"}
        for text, problem in bad.items():
            with self.assertRaises(EndpointError, msg=text) as cm:
                host_port(text, "", None)
            self.assertEqual(str(cm.exception), problem, text)

    def test_client_forms(self):
        self.assertEqual(host_port("mx.example", None, "smtp"), ("mx.example", "smtp"))
        self.assertEqual(host_port("[::1]", None, "smtp"), ("::1", "smtp"))
        self.assertEqual(host_port("x:26", None, "smtp"), ("x", "26"))
        with self.assertRaises(EndpointError):
            host_port(":25", None, "smtp")


class ValidityTest(unittest.TestCase):
    def test_hostnames(self):
        for name in ("a", "a-b.example", "a_b", "x1.y2", "1a"):
            self.assertTrue(endpoints.valid_hostname(name), name)
        gripes = {"-x": "valid_hostname: misplaced hyphen: -x",
                  "x-": "valid_hostname: misplaced hyphen: x-",
                  "x.": "valid_hostname: misplaced delimiter: x.",
                  ".x": "valid_hostname: misplaced delimiter: .x",
                  "1.2.3.4": "valid_hostname: numeric hostname: 1.2.3.4",
                  "bad host": "valid_hostname: invalid character 32(decimal): bad host",
                  "a" * 64: "valid_hostname: hostname label too long: " + "a" * 64,
                  "": "valid_hostname: empty hostname"}
        for name, text in gripes.items():
            said = []
            self.assertFalse(endpoints.valid_hostname(name, said.append), name)
            self.assertEqual(said, [text])

    def test_addresses(self):
        for addr in ("127.0.0.1", "0.0.0.0", "::1", "::", "1:2:3:4:5:6:7:8",
                     "::ffff:1.2.3.4", "fe80::1"):
            self.assertTrue(endpoints.valid_hostaddr(addr), addr)
        for addr in ("1.2.3", "256.1.1.1", "01.2.3.4x", "1:2:3:4:5:6:7:8:9",
                     "1::2::3", "12345::1", ":1:2", "1.2.3.4."):
            self.assertFalse(endpoints.valid_hostaddr(addr), addr)
        said = []
        endpoints.valid_ipv4_hostaddr("1.2.3", said.append)
        self.assertEqual(said, ["valid_ipv4_hostaddr: invalid octet count: 1.2.3"])


class ClientAddressTest(unittest.TestCase):
    def test_dump_forms(self):
        self.assertEqual(endpoints.client_address(socket.AF_INET, ("127.0.0.1", 5)),
                         ("127.0.0.1", ""))
        self.assertEqual(endpoints.client_address(socket.AF_INET6, ("::1", 5, 0, 0)),
                         ("::1", "ipv6:"))
        self.assertEqual(endpoints.client_address(socket.AF_UNIX, ""), ("local", ""))


if __name__ == "__main__":
    unittest.main()
