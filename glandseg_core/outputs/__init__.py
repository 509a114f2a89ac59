"""What glandseg gives back besides label maps: overlays and gland tables / GeoJSON."""
