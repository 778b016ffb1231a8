"""Endpoints: "[inet:][host]:port", "[addr]:port", "unix:pathname".

Both tools take an endpoint on the command line.  This module splits it the
way Postfix does (host and port are split at the last colon; "[...]" quotes
an address; a lone "port" means any host for a server), checks host names
and addresses with Postfix's rules, resolves them with getaddrinfo(), and
opens the listening or connecting socket.  Problems are reported with the
same texts as Postfix ("127.0.0.1: garbage after numerical service",
"bind 127.0.0.1 port 25: Permission denied") through messages.fatal().
"""

import errno
import os
import socket

# Address families selected by -4 / -6 (None: both, as Postfix's default).
FAMILIES = {None: socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}

VALID_HOSTNAME_LEN = 255        # RFC 1035
VALID_LABEL_LEN = 63            # RFC 1035
UNIX_PATH_MAX = 108             # sizeof(sun_path) on Linux


class EndpointError(Exception):
    """An endpoint that cannot be used; str() is Postfix's problem text."""


def _gripe(gripe, text):
    if gripe is not None:
        gripe(text)


def valid_hostname(name, gripe=None):
    """Postfix's host name rules: letters, digits, '_', '-', '.' in labels."""
    who = "valid_hostname"
    if not name:
        _gripe(gripe, "%s: empty hostname" % who)
        return False
    label_length = 0
    non_numeric = False
    for i, ch in enumerate(name):
        nxt = name[i + 1:i + 2]
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            label_length += 1
            if label_length > VALID_LABEL_LEN:
                _gripe(gripe, "%s: hostname label too long: %.100s" % (who, name))
                return False
            if not ch.isdigit():
                non_numeric = True
        elif ch == ".":
            if label_length == 0 or nxt == "":
                _gripe(gripe, "%s: misplaced delimiter: %.100s" % (who, name))
                return False
            label_length = 0
        elif ch == "-":
            label_length += 1
            if label_length == 1 or nxt in ("", "."):
                _gripe(gripe, "%s: misplaced hyphen: %.100s" % (who, name))
                return False
        else:
            _gripe(gripe, "%s: invalid character %d(decimal): %.100s"
                   % (who, _char_code(ch), name))
            return False
    if not non_numeric:
        _gripe(gripe, "%s: numeric hostname: %.100s" % (who, name))
        return False
    if len(name) > VALID_HOSTNAME_LEN:
        _gripe(gripe, "%s: bad length %d for %.100s..." % (who, len(name), name))
        return False
    return True


def _char_code(ch):
    """The byte value C code would print for ch (argv arrives surrogate-escaped)."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return code - 0xDC00
    return code


def valid_hostaddr(addr, gripe=None):
    """A numeric IPv4 or IPv6 address, by Postfix's syntax rules."""
    if not addr:
        _gripe(gripe, "valid_hostaddr: empty address")
        return False
    if ":" in addr:
        return valid_ipv6_hostaddr(addr, gripe)
    return valid_ipv4_hostaddr(addr, gripe)


def valid_ipv4_hostaddr(addr, gripe=None):
    """Dotted quad, each octet at most 255, no leading 0 octet (but 0.0.0.0)."""
    who = "valid_ipv4_hostaddr"
    in_byte = False
    byte_count = 0
    byte_val = 0
    for i, ch in enumerate(addr):
        if "0" <= ch <= "9":
            if not in_byte:
                in_byte = True
                byte_val = 0
                byte_count += 1
            byte_val = byte_val * 10 + ord(ch) - ord("0")
            if byte_val > 255:
                _gripe(gripe, "%s: invalid octet value: %.100s" % (who, addr))
                return False
        elif ch == ".":
            if not in_byte or i + 1 == len(addr):
                _gripe(gripe, "%s: misplaced dot: %.100s" % (who, addr))
                return False
            if byte_count == 1 and byte_val == 0 and addr.strip("0."):
                _gripe(gripe, "%s: bad initial octet value: %.100s" % (who, addr))
                return False
            in_byte = False
        else:
            _gripe(gripe, "%s: invalid character %d(decimal): %.100s"
                   % (who, _char_code(ch), addr))
            return False
    if byte_count != 4:
        _gripe(gripe, "%s: invalid octet count: %.100s" % (who, addr))
        return False
    return True


def valid_ipv6_hostaddr(addr, gripe=None):
    """Eight hex fields separated by ':', one '::' allowed, IPv4 tail allowed."""
    who = "valid_ipv6_hostaddr"
    null_field = 0
    field = 0
    length = 0
    pos = 0
    hexdigits = "0123456789abcdefABCDEF"
    while True:
        ch = addr[pos:pos + 1]
        if ch == "":
            if field < 2:
                _gripe(gripe, "%s: too few `:' in IPv6 address: %.100s" % (who, addr))
                return False
            if length == 0 and null_field != field - 1:
                _gripe(gripe, "%s: bad null last field in IPv6 address: %.100s"
                       % (who, addr))
                return False
            return True
        if ch == ".":
            if field < 2 or field > 6:
                _gripe(gripe, "%s: malformed IPv4-in-IPv6 address: %.100s"
                       % (who, addr))
                return False
            return valid_ipv4_hostaddr(addr[pos - length:], gripe)
        if ch == ":":
            nxt = addr[pos + 1:pos + 2]
            if field == 0 and length == 0 and nxt.isascii() and nxt.isalnum():
                _gripe(gripe, "%s: bad null first field in IPv6 address: %.100s"
                       % (who, addr))
                return False
            field += 1
            if field > 7:
                _gripe(gripe, "%s: too many `:' in IPv6 address: %.100s" % (who, addr))
                return False
            pos += 1
            length = 0
            if addr[pos:pos + 1] == ":":
                if null_field > 0:
                    _gripe(gripe, "%s: too many `::' in IPv6 address: %.100s"
                           % (who, addr))
                    return False
                null_field = field
            continue
        length = 0
        while pos + length < len(addr) and addr[pos + length] in hexdigits:
            length += 1
        if length > 4:
            _gripe(gripe, "%s: malformed IPv6 address: %.100s" % (who, addr))
            return False
        if length == 0:
            _gripe(gripe, "%s: invalid character %d(decimal) in IPv6 address: %.100s"
                   % (who, _char_code(ch), addr))
            return False
        pos += length


def host_port(text, def_host, def_service):
    """Split text into (host, port) as Postfix's host_port() does.

    A server passes def_host="" (":25" and "25" mean any host); a client
    passes def_service (the port used when none is given).  Raises
    EndpointError with Postfix's problem text.
    """
    if text.startswith("["):
        rest = text[1:]
        ipv6 = rest[:5].lower() == "ipv6:"
        if ipv6:
            rest = rest[5:]
        if "]" not in rest:
            raise EndpointError('missing "]"')
        host, rest = rest.split("]", 1)
        if rest and not rest.startswith(":"):
            raise EndpointError('garbage after "]"')
        if ipv6 and not valid_ipv6_hostaddr(host):
            raise EndpointError("malformed IPv6 address")
        host_given, port = True, rest[1:] or None
    elif ":" in text:
        host, port = text.rsplit(":", 1)
        host_given, host, port = bool(host), host or def_host, port or None
    elif def_host is not None:          # server: "port" alone
        host_given, host, port = False, def_host, text or None
    else:                               # client: "host" alone
        host_given, host, port = True, text or None, None
    port_given = port is not None
    if port is None:
        port = def_service
    if host is None:
        raise EndpointError("missing host information")
    if port is None:
        raise EndpointError("missing service information")
    if host_given and not valid_hostname(host) and not valid_hostaddr(host):
        raise EndpointError("valid hostname or network address required")
    if port_given and port[:1].isdigit() and port[:1].isascii() \
            and not all("0" <= ch <= "9" for ch in port):
        raise EndpointError("garbage after numerical service")
    return host, port


def resolve(host, port, family=None, passive=False):
    """getaddrinfo() for a stream socket; raises socket.gaierror."""
    flags = socket.AI_PASSIVE if passive else 0
    return socket.getaddrinfo(host or None, port, FAMILIES[family],
                              socket.SOCK_STREAM, 0, flags)


def address_text(sockaddr):
    """The numeric host of a socket address ("127.0.0.1", "::1")."""
    return sockaddr[0].split("%", 1)[0] if isinstance(sockaddr, tuple) else "local"


def listen(endpoint, backlog, msg, family=None, window=0):
    """Open the listening socket of a server endpoint, or die like Postfix.

    family: None, "4" or "6" (-4/-6).  window: SO_SNDBUF/SO_RCVBUF (-T).
    Returns (socket, kind) with kind "inet" or "unix".
    """
    if endpoint.startswith("unix:"):
        return _listen_unix(endpoint[5:], backlog, msg), "unix"
    if endpoint.startswith("inet:"):
        endpoint = endpoint[5:]
    try:
        host, port = host_port(endpoint, "", None)
    except EndpointError as err:
        msg.fatal("%s: %s" % (endpoint, err))
    try:
        info = resolve(host, port, family, passive=True)
    except socket.gaierror as err:
        msg.fatal("%s: %s" % (endpoint, err.strerror))
    fam, kind, proto, _, sockaddr = info[0]
    if msg.verbose:
        msg.info("trying... [%s]:%d" % (address_text(sockaddr), sockaddr[1]))
    sock = socket.socket(fam, kind, proto)
    try:
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if window:
            set_window(sock, window)
        try:
            sock.bind(sockaddr)
        except OSError as err:
            msg.fatal("bind %s port %d: %s"
                      % (address_text(sockaddr), sockaddr[1], strerror(err)))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock, "inet"


def listen_again(first, count, backlog, msg, window=0):
    """count more sockets listening where `first` does (SO_REUSEPORT), so
    that each worker process has its own and the kernel spreads the
    connections over them."""
    sockets = []
    address = first.getsockname()
    for _ in range(count):
        sock = socket.socket(first.family, socket.SOCK_STREAM)
        sockets.append(sock)
        try:
            if first.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if window:
                set_window(sock, window)
            sock.bind(address)
            sock.listen(backlog)
        except OSError as err:
            for made in sockets:
                made.close()
            msg.fatal("bind %s port %d: %s" % (address_text(address), address[1],
                                               strerror(err)))
    return sockets


def _listen_unix(path, backlog, msg):
    if len(os.fsencode(path)) >= UNIX_PATH_MAX:
        msg.fatal("unix-domain name too long: %s" % path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            if path:
                msg.fatal("remove %s: %s" % (path, strerror(err)))
        try:
            sock.bind(path)
        except OSError as err:
            msg.fatal("bind: %s: %s" % (path, strerror(err)))
        try:
            os.chmod(path, 0o666)
        except OSError as err:
            msg.fatal("chmod socket %s: %s" % (path, strerror(err)))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def set_window(sock, size):
    """-T: a fixed TCP window, through the socket buffer sizes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def strerror(err):
    """The C library's text for an OSError ("Connection refused")."""
    if err.errno is not None:
        return os.strerror(err.errno)
    return str(err)


def client_address(family, peer):
    """What Postfix's dumps call the client: ("127.0.0.1", ""), ("::1", "ipv6:")
    or ("local", "") for a UNIX-domain client."""
    if family == socket.AF_INET6:
        return address_text(peer), "ipv6:"
    if family == socket.AF_INET:
        return address_text(peer), ""
    return "local", ""


__all__ = ["EndpointError", "host_port", "listen", "resolve", "strerror",
           "valid_hostname", "valid_hostaddr", "valid_ipv4_hostaddr",
           "valid_ipv6_hostaddr", "set_window", "client_address", "errno"]


# ------------------------------------------------------------ client side

MAX_LITERAL = 46                # INET6_ADDRSTRLEN: the text inside "[...]"


def valid_mailhost_literal(literal, gripe=None):
    """An address literal as in "foo@[10.1.2.3]" or "[IPv6:::1]" (RFC 5321 4.1.3)."""
    who = "valid_mailhost_literal"
    if not literal.startswith("["):
        _gripe(gripe, "%s: '[' expected at start: %.100s" % (who, literal))
        return False
    close = literal.find("]")
    if close < 0:
        _gripe(gripe, "%s: ']' expected at end: %.100s" % (who, literal))
        return False
    if close + 1 < len(literal):
        _gripe(gripe, "%s: unexpected text after ']': %.100s" % (who, literal))
        return False
    inside = literal[1:close]
    if len(inside) >= MAX_LITERAL:
        _gripe(gripe, "%s: too much text: %.100s" % (who, literal))
        return False
    if inside[:5].lower() == "ipv6:":
        return valid_ipv6_hostaddr(inside[5:], gripe)
    return valid_ipv4_hostaddr(inside, gripe)


def client_endpoint(endpoint, family=None, def_service="smtp"):
    """Where a client connects, as Postfix's smtp-source works it out.

    endpoint is "unix:pathname" or "[inet:]host[:port]" (default port
    def_service).  Returns (address family, socket address).  Raises
    EndpointError whose text is the whole complaint ("127.0.0.1:abc:
    Servname not supported for ai_socktype").
    """
    if endpoint.startswith("unix:"):
        path = os.fsencode(endpoint[5:])
        if len(path) >= UNIX_PATH_MAX:
            raise EndpointError("unix-domain name too long: %s" % endpoint[5:])
        # Postfix passes the whole, NUL-padded sun_path: an empty name is
        # then an (unused) abstract address, and connecting is refused.
        return socket.AF_UNIX, path or b"\0" * UNIX_PATH_MAX
    if endpoint.startswith("inet:"):
        endpoint = endpoint[5:]
    try:
        host, port = host_port(endpoint, None, def_service)
    except EndpointError as err:
        raise EndpointError("%s: %s" % (endpoint, err)) from None
    try:
        info = resolve(host, port, family)
    except socket.gaierror as err:
        raise EndpointError("%s: %s" % (endpoint, err.strerror)) from None
    fam, _, _, _, sockaddr = info[0]
    return fam, sockaddr


__all__ += ["valid_mailhost_literal", "client_endpoint"]
