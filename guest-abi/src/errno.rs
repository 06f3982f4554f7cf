//! Xen error values (`xen/include/public/errno.h`). Hypercalls return them negated.

pub const EPERM: i64 = 1;
pub const ENOENT: i64 = 2;
pub const ESRCH: i64 = 3;
pub const EINTR: i64 = 4;
pub const EIO: i64 = 5;
pub const ENXIO: i64 = 6;
pub const E2BIG: i64 = 7;
pub const ENOEXEC: i64 = 8;
pub const EBADF: i64 = 9;
pub const ECHILD: i64 = 10;
pub const EAGAIN: i64 = 11;
pub const ENOMEM: i64 = 12;
pub const EACCES: i64 = 13;
pub const EFAULT: i64 = 14;
pub const EBUSY: i64 = 16;
pub const EEXIST: i64 = 17;
pub const EXDEV: i64 = 18;
pub const ENODEV: i64 = 19;
pub const EINVAL: i64 = 22;
pub const ENFILE: i64 = 23;
pub const EMFILE: i64 = 24;
pub const ENOSPC: i64 = 28;
pub const EROFS: i64 = 30;
pub const EMLINK: i64 = 31;
pub const EDOM: i64 = 33;
pub const ERANGE: i64 = 34;
pub const EDEADLK: i64 = 35;
pub const ENAMETOOLONG: i64 = 36;
pub const ENOLCK: i64 = 37;
pub const ENOSYS: i64 = 38;
pub const ENOTEMPTY: i64 = 39;
pub const ENODATA: i64 = 61;
pub const ETIME: i64 = 62;
pub const EBADMSG: i64 = 74;
pub const EOVERFLOW: i64 = 75;
pub const EILSEQ: i64 = 84;
pub const ERESTART: i64 = 85;
pub const ENOTSOCK: i64 = 88;
pub const EOPNOTSUPP: i64 = 95;
pub const EADDRINUSE: i64 = 98;
pub const EADDRNOTAVAIL: i64 = 99;
pub const ENOBUFS: i64 = 105;
pub const EISCONN: i64 = 106;
pub const ENOTCONN: i64 = 107;
pub const ETIMEDOUT: i64 = 110;

/// Every error value of Xen's public `errno.h`: a hypercall fails with one of these, negated.
pub const ALL: [i64; 45] = [
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    ENOEXEC,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOSPC,
    EROFS,
    EMLINK,
    EDOM,
    ERANGE,
    EDEADLK,
    ENAMETOOLONG,
    ENOLCK,
    ENOSYS,
    ENOTEMPTY,
    ENODATA,
    ETIME,
    EBADMSG,
    EOVERFLOW,
    EILSEQ,
    ERESTART,
    ENOTSOCK,
    EOPNOTSUPP,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENOBUFS,
    EISCONN,
    ENOTCONN,
    ETIMEDOUT,
];

/// `e` (positive) is one of Xen's error values.
pub fn is_xen_errno(e: i64) -> bool {
    ALL.contains(&e)
}
