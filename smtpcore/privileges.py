"""Giving up root for good: -u user and -R root-directory.

A server started as root opens its listening socket first (port 25 needs
root), then drops privileges the way Postfix's chroot_uid() does:

    1. look the user up (and its supplementary groups, while /etc is visible)
    2. set the group id                      "setgid(65534): ..."
    3. set the supplementary groups          "initgroups: ..."
    4. chroot to -R and chdir("/")           "chroot(/jail): ..."
    5. set the user id (real, effective, saved and file-system ids)

Each failure is fatal, with Postfix's wording.
"""

import os
import pwd

from .endpoints import strerror


def drop(user, root_dir, msg):
    """Become user (if given), jailed in root_dir (if given); -u is what
    triggers it, as in Postfix: -R without -u does nothing."""
    if user is None:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        msg.fatal("unknown user: %s" % user)
    uid, gid = entry.pw_uid, entry.pw_gid
    groups = os.getgrouplist(user, gid)     # needs /etc/group: before chroot
    try:
        os.setgid(gid)
    except OSError as err:
        msg.fatal("setgid(%d): %s" % (gid, strerror(err)))
    try:
        os.setgroups(groups)
    except OSError as err:
        msg.fatal("initgroups: %s" % strerror(err))
    if root_dir is not None:
        try:
            os.chroot(root_dir)
        except OSError as err:
            msg.fatal("chroot(%s): %s" % (root_dir, strerror(err)))
        try:
            os.chdir("/")
        except OSError as err:
            msg.fatal("chdir(/): %s" % strerror(err))
    try:
        os.setuid(uid)
    except OSError as err:
        msg.fatal("setuid(%d): %s" % (uid, strerror(err)))
    if msg.verbose > 1:
        msg.info("chroot %s user %s" % (root_dir or "(none)", user))
