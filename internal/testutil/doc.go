// Package testutil holds helpers shared by the tests of several packages
// (cmd/vnic, oid, integration and others), which Go test files cannot share
// otherwise. It is imported only from _test.go files, and imports nothing
// but the standard library.
package testutil
