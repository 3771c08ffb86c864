package prep

import "k8s.io/apimachinery/pkg/api/resource"

func resourceQ(s string) resource.Quantity { return resource.MustParse(s) }
