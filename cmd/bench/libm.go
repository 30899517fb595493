// sqlite-vector's vector.so calls libm (fmaxf and others) without naming
// it as a dependency: the sqlite3 shell and Python have libm loaded, a Go
// binary need not. Loading it globally before the extension lets dlopen
// resolve those symbols.

package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

static const char *load_libm(void) {
	if (dlopen("libm.so.6", RTLD_NOW | RTLD_GLOBAL) == NULL) {
		return dlerror();
	}
	return NULL;
}
*/
import "C"

import "errors"

// loadLibm makes libm's symbols global in this process.
func loadLibm() error {
	if msg := C.load_libm(); msg != nil {
		return errors.New("load libm for sqlite-vector: " + C.GoString(msg))
	}
	return nil
}
