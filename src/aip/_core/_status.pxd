# The one boundary where the core's status codes become Python exceptions.
cdef int raise_for_status(int status, str what) except -1
