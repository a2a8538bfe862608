package render

import (
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Wiring is an input Grape fills from another module's output when the
// intent leaves it unset: the VPC's subnets into EKS and RDS, the EKS cluster
// into Karpenter. An explicit intent value always wins over the wiring.
type Wiring struct {
	Module string // the consuming module
	Input  string // its variable
	From   string // the producing module
	Output string // its output
	// Shape says how a possibly disabled producer is read, so the rendered
	// expression evaluates cleanly when that module has count = 0.
	Shape WireShape
}

// WireShape is how the producer's output (a list of zero or one instance
// values, module.<from>[*].<output>) becomes the input value.
type WireShape int

const (
	// WireOne passes one(module.F[*].O): the value, or null when F is off.
	// Used for required inputs, whose dependency the validator enforces.
	WireOne WireShape = iota
	// WireList passes module.F[*].O: a list of the single value, or [] when
	// F is off (a VPC CIDR as an allowed CIDR list).
	WireList
)

// wirings is the fixed dependency graph between Grape's modules. A template
// set that provides both ends of a wiring must provide the named variable and
// output (Load checks it); a set without one of the modules simply has no
// such wiring.
var wirings = []Wiring{
	{Module: "eks", Input: "subnet_ids", From: "vpc", Output: "private_subnet_ids", Shape: WireOne},
	{Module: "rds", Input: "subnet_ids", From: "vpc", Output: "private_subnet_ids", Shape: WireOne},
	{Module: "rds", Input: "vpc_id", From: "vpc", Output: "vpc_id", Shape: WireOne},
	{Module: "rds", Input: "allowed_cidr_blocks", From: "vpc", Output: "vpc_cidr_block", Shape: WireList},
	{Module: "karpenter", Input: "cluster_name", From: "eks", Output: "cluster_name", Shape: WireOne},
}

// tokens builds the HCL expression reading the producer, e.g.
// one(module.vpc[*].private_subnet_ids), from tokens rather than text.
func (w Wiring) tokens() hclwrite.Tokens {
	splat := hclwrite.Tokens{
		{Type: hclsyntax.TokenIdent, Bytes: []byte("module")},
		{Type: hclsyntax.TokenDot, Bytes: []byte(".")},
		{Type: hclsyntax.TokenIdent, Bytes: []byte(w.From)},
		{Type: hclsyntax.TokenOBrack, Bytes: []byte("[")},
		{Type: hclsyntax.TokenStar, Bytes: []byte("*")},
		{Type: hclsyntax.TokenCBrack, Bytes: []byte("]")},
		{Type: hclsyntax.TokenDot, Bytes: []byte(".")},
		{Type: hclsyntax.TokenIdent, Bytes: []byte(w.Output)},
	}
	switch w.Shape {
	case WireList:
		return splat
	default:
		return hclwrite.TokensForFunctionCall("one", splat)
	}
}
