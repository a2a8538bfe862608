package render

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// validationFuncs are the Terraform functions a template's validation blocks
// may use and still be checked by Validate, before any plan. A condition
// calling anything else is left to Terraform at plan time. Each behaves as
// Terraform's function of the same name for the inputs validations see.
var validationFuncs = map[string]function.Function{
	"abs":         stdlib.AbsoluteFunc,
	"alltrue":     allTrueFunc,
	"anytrue":     anyTrueFunc,
	"can":         tryfunc.CanFunc,
	"ceil":        stdlib.CeilFunc,
	"cidrhost":    cidrHostFunc,
	"cidrnetmask": cidrNetmaskFunc,
	"cidrsubnet":  cidrSubnetFunc,
	"coalesce":    stdlib.CoalesceFunc,
	"concat":      stdlib.ConcatFunc,
	"contains":    stdlib.ContainsFunc,
	"distinct":    stdlib.DistinctFunc,
	"endswith":    endsWithFunc,
	"flatten":     stdlib.FlattenFunc,
	"floor":       stdlib.FloorFunc,
	"join":        stdlib.JoinFunc,
	"keys":        stdlib.KeysFunc,
	"length":      lengthFunc,
	"lower":       stdlib.LowerFunc,
	"max":         stdlib.MaxFunc,
	"min":         stdlib.MinFunc,
	"range":       stdlib.RangeFunc,
	"regex":       stdlib.RegexFunc,
	"regexall":    stdlib.RegexAllFunc,
	"split":       stdlib.SplitFunc,
	"startswith":  startsWithFunc,
	"substr":      stdlib.SubstrFunc,
	"tolist":      stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
	"tonumber":    stdlib.MakeToFunc(cty.Number),
	"toset":       stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
	"tostring":    stdlib.MakeToFunc(cty.String),
	"trimspace":   stdlib.TrimSpaceFunc,
	"try":         tryfunc.TryFunc,
	"upper":       stdlib.UpperFunc,
	"values":      stdlib.ValuesFunc,
}

// lengthFunc is Terraform's length: characters of a string, elements of a
// collection or structure.
var lengthFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "value", Type: cty.DynamicPseudoType, AllowDynamicType: true, AllowUnknown: true}},
	Type:   function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v := args[0]
		ty := v.Type()
		switch {
		case ty == cty.String:
			return stdlib.Strlen(v)
		case ty.IsListType() || ty.IsSetType() || ty.IsMapType() || ty.IsTupleType() || ty.IsObjectType():
			if ty.IsTupleType() {
				return cty.NumberIntVal(int64(len(ty.TupleElementTypes()))), nil
			}
			if ty.IsObjectType() {
				return cty.NumberIntVal(int64(len(ty.AttributeTypes()))), nil
			}
			if !v.IsKnown() {
				return cty.UnknownVal(cty.Number), nil
			}
			return v.Length(), nil
		case ty == cty.DynamicPseudoType:
			return cty.UnknownVal(cty.Number), nil
		}
		return cty.UnknownVal(cty.Number), errors.New("argument must be a string, a collection type, or a structural type")
	},
})

func boolReduce(all bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			result := all
			for it := args[0].ElementIterator(); it.Next(); {
				_, v := it.Element()
				if !v.IsKnown() {
					return cty.UnknownVal(cty.Bool), nil
				}
				if v.IsNull() {
					if all {
						return cty.False, nil
					}
					continue
				}
				if v.True() != all {
					return cty.BoolVal(!all), nil
				}
			}
			return cty.BoolVal(result), nil
		},
	})
}

var (
	allTrueFunc = boolReduce(true)
	anyTrueFunc = boolReduce(false)
)

func affixFunc(has func(s, affix string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "affix", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(has(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

var (
	startsWithFunc = affixFunc(strings.HasPrefix)
	endsWithFunc   = affixFunc(strings.HasSuffix)
)

// parseCIDR parses a CIDR block as Terraform's cidr functions do: host bits
// may be set (they are masked off), and IPv4 octets may carry leading zeros,
// read as decimal.
func parseCIDR(s string) (netip.Prefix, error) {
	addr, bitsStr, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
	}
	bits, err := strconv.Atoi(bitsStr)
	if err != nil || bitsStr == "" || (len(bitsStr) > 1 && bitsStr[0] == '0') {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
	}
	var ip netip.Addr
	if strings.Contains(addr, ":") {
		ip, err = netip.ParseAddr(addr)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
		}
	} else {
		parts := strings.Split(addr, ".")
		if len(parts) != 4 {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
		}
		var b [4]byte
		for i, part := range parts {
			if part == "" || len(part) > 3 {
				return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
			}
			n, err := strconv.Atoi(part)
			if err != nil || n > 255 || strings.ContainsAny(part, "+-") {
				return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
			}
			b[i] = byte(n)
		}
		ip = netip.AddrFrom4(b)
	}
	if bits < 0 || bits > ip.BitLen() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func intAddr(n *big.Int, v4 bool) netip.Addr {
	size := 16
	if v4 {
		size = 4
	}
	b := n.FillBytes(make([]byte, size))
	a, _ := netip.AddrFromSlice(b)
	return a
}

func wholeNumber(v cty.Value, what string) (*big.Int, error) {
	bf := v.AsBigFloat()
	if !bf.IsInt() {
		return nil, fmt.Errorf("%s must be a whole number", what)
	}
	i, _ := bf.Int(nil)
	return i, nil
}

var cidrHostFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "hostnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := parseCIDR(args[0].AsString())
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		host, err := wholeNumber(args[1], "hostnum")
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		hostBits := p.Addr().BitLen() - p.Bits()
		size := new(big.Int).Lsh(big.NewInt(1), uint(hostBits))
		if host.Sign() < 0 {
			host.Add(host, size)
		}
		if host.Sign() < 0 || host.Cmp(size) >= 0 {
			return cty.UnknownVal(cty.String), fmt.Errorf("prefix of %d does not accommodate a host numbered %s", p.Bits(), args[1].AsBigFloat().String())
		}
		n := new(big.Int).Add(addrInt(p.Addr()), host)
		return cty.StringVal(intAddr(n, p.Addr().Is4()).String()), nil
	},
})

var cidrNetmaskFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := parseCIDR(args[0].AsString())
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		if !p.Addr().Is4() {
			return cty.UnknownVal(cty.String), errors.New("IPv6 addresses cannot have a netmask")
		}
		mask := new(big.Int).Lsh(new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(p.Bits())), big.NewInt(1)), uint(32-p.Bits()))
		return cty.StringVal(intAddr(mask, true).String()), nil
	},
})

var cidrSubnetFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "newbits", Type: cty.Number}, {Name: "netnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := parseCIDR(args[0].AsString())
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		nb, err := wholeNumber(args[1], "newbits")
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		num, err := wholeNumber(args[2], "netnum")
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		s, err := subnet(p, int(nb.Int64()), num)
		if err != nil {
			return cty.UnknownVal(cty.String), err
		}
		return cty.StringVal(s.String()), nil
	},
})

// subnet is cidrsubnet on a parsed prefix.
func subnet(p netip.Prefix, newbits int, num *big.Int) (netip.Prefix, error) {
	total := p.Addr().BitLen()
	if newbits < 0 || p.Bits()+newbits > total {
		return netip.Prefix{}, fmt.Errorf("insufficient address space to extend prefix of %d by %d", p.Bits(), newbits)
	}
	limit := new(big.Int).Lsh(big.NewInt(1), uint(newbits))
	if num.Sign() < 0 || num.Cmp(limit) >= 0 {
		return netip.Prefix{}, fmt.Errorf("prefix extension of %d does not accommodate a subnet numbered %s", newbits, num)
	}
	shift := uint(total - p.Bits() - newbits)
	n := new(big.Int).Add(addrInt(p.Addr()), new(big.Int).Lsh(num, shift))
	return netip.PrefixFrom(intAddr(n, p.Addr().Is4()), p.Bits()+newbits), nil
}
